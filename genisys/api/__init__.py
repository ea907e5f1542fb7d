"""The HTTP API: the application factory and the routes."""

from collections.abc import Callable
from dataclasses import dataclass, field

import tornado.web

from genisys.api.base import NotFoundHandler, log_request
from genisys.api.computes import ComputeHandler, ComputesHandler
from genisys.api.events import AllEventsHandler, ServiceEventsHandler
from genisys.api.health import HealthHandler
from genisys.api.leader import LeaderHandler
from genisys.api.services import PauseHandler, ScaleHandler, ServiceHandler, ServicesHandler
from genisys.api.tokens import TokenHandler, TokensHandler
from genisys.api.ui import StatusPageHandler
from genisys.auth import Authenticator
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
    # None: authentication is off (no bootstrap token, bound to loopback or --insecure).
    auth: Authenticator | None = None
    insecure: bool = False  # serving without authentication on a non-loopback address


def make_app(context: Context) -> tornado.web.Application:
    args = {"context": context}
    return tornado.web.Application(
        [
            (r"/compute/?", ComputesHandler, args),
            (r"/compute/([^/]+)", ComputeHandler, args),
            (r"/service/?", ServicesHandler, args),
            (r"/service/([^/]+)", ServiceHandler, args),
            (r"/service/([^/]+)/scale", ScaleHandler, args),
            (r"/service/([^/]+)/(pause|resume)", PauseHandler, args),
            (r"/service/([^/]+)/events", ServiceEventsHandler, args),
            (r"/events", AllEventsHandler, args),
            (r"/health", HealthHandler, args),
            (r"/leader", LeaderHandler, args),
            (r"/token/?", TokensHandler, args),
            (r"/token/([^/]+)", TokenHandler, args),
            (r"/ui", StatusPageHandler, args),
            (r"/ui/", StatusPageHandler, args),
            (r"/ui/([^/]+)", StatusPageHandler, args),
        ],
        default_handler_class=NotFoundHandler, default_handler_args=args,
        log_function=log_request,
    )
