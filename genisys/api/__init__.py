"""The HTTP API: the application factory and the routes."""

from collections.abc import Callable
from dataclasses import dataclass, field

import tornado.web

from genisys.api.base import NotFoundHandler
from genisys.api.computes import ComputeHandler, ComputesHandler
from genisys.api.health import HealthHandler
from genisys.api.leader import LeaderHandler
from genisys.api.services import ScaleHandler, ServiceHandler, ServicesHandler
from genisys.api.ui import StatusPageHandler
from genisys.config import Config
from genisys.store import ConsulStore


@dataclass
class Context:
    """What handlers need; the same for every request of a replica."""
    config: Config
    store: ConsulStore
    replica_id: str
    is_leader: Callable[[], bool] = field(default=lambda: False)
    # When the leader's last reconcile cycle completed (None on followers): a stuck loop
    # shows in /health.
    last_cycle: Callable[[], dict | None] = field(default=lambda: None)
    # Why the replica cannot do its job (denied permissions, election), for /health.
    troubles: Callable[[], list[str]] = field(default=lambda: [])


def make_app(context: Context) -> tornado.web.Application:
    args = {"context": context}
    return tornado.web.Application(
        [
            (r"/compute/?", ComputesHandler, args),
            (r"/compute/([^/]+)", ComputeHandler, args),
            (r"/service/?", ServicesHandler, args),
            (r"/service/([^/]+)", ServiceHandler, args),
            (r"/service/([^/]+)/scale", ScaleHandler, args),
            (r"/health", HealthHandler, args),
            (r"/leader", LeaderHandler, args),
            (r"/ui(?:/([^/]*))?", StatusPageHandler, args),
        ],
        default_handler_class=NotFoundHandler, default_handler_args=args,
    )
