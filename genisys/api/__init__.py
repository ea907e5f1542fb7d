"""The HTTP API: the application factory and the routes."""

from collections.abc import Callable
from dataclasses import dataclass, field

import tornado.web

from genisys.api.base import JsonHandler, NotFoundHandler
from genisys.api.computes import ComputeHandler, ComputesHandler
from genisys.api.health import HealthHandler
from genisys.api.leader import LeaderHandler
from genisys.api.services import ScaleHandler, ServiceHandler, ServicesHandler
from genisys.config import Config
from genisys.metrics import MetricsPage, ReplicaMetrics
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

    @property
    def metrics(self) -> ReplicaMetrics:
        return self.store.metrics


class MetricsHandler(MetricsPage, JsonHandler):
    @property
    def metrics_registry(self):
        return self.context.metrics.registry


def make_app(context: Context) -> tornado.web.Application:
    def args(route: str) -> dict:  # the route pattern labels the HTTP metrics
        return {"context": context, "route": route}

    return tornado.web.Application(
        [
            (r"/compute/?", ComputesHandler, args("/compute")),
            (r"/compute/([^/]+)", ComputeHandler, args("/compute/{name}")),
            (r"/service/?", ServicesHandler, args("/service")),
            (r"/service/([^/]+)", ServiceHandler, args("/service/{svc}")),
            (r"/service/([^/]+)/scale", ScaleHandler, args("/service/{svc}/scale")),
            (r"/health", HealthHandler, args("/health")),
            (r"/leader", LeaderHandler, args("/leader")),
            (r"/metrics", MetricsHandler, args("/metrics")),
        ],
        default_handler_class=NotFoundHandler, default_handler_args=args("unmatched"),
    )
