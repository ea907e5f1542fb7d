"""The HTTP API: the application factory and the routes."""

from collections.abc import Callable
from dataclasses import dataclass, field

import tornado.web

from genisys.api.base import JsonHandler, NotFoundHandler, log_request
from genisys.api.computes import ComputeHandler, ComputesHandler
from genisys.api.events import AllEventsHandler, ServiceEventsHandler
from genisys.api.health import HealthHandler
from genisys.api.leader import LeaderHandler
from genisys.api.services import PauseHandler, ScaleHandler, ServiceHandler, ServicesHandler
from genisys.api.spec import SpecHandler
from genisys.api.tokens import TokenHandler, TokensHandler
from genisys.api.velocity import VelocityHandler
from genisys.api.ui import StatusPageHandler
from genisys.auth import Authenticator
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
    # None: authentication is off (no bootstrap token, bound to loopback or --insecure).
    auth: Authenticator | None = None
    insecure: bool = False  # serving without authentication on a non-loopback address

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
            (r"/service/([^/]+)/(pause|resume)", PauseHandler,
             args("/service/{svc}/{action}")),
            (r"/service/([^/]+)/events", ServiceEventsHandler, args("/service/{svc}/events")),
            (r"/service/([^/]+)/velocity", VelocityHandler, args("/service/{svc}/velocity")),
            (r"/events", AllEventsHandler, args("/events")),
            (r"/health", HealthHandler, args("/health")),
            (r"/leader", LeaderHandler, args("/leader")),
            (r"/openapi.yaml", SpecHandler, args("/openapi.yaml")),
            (r"/token/?", TokensHandler, args("/token")),
            (r"/token/([^/]+)", TokenHandler, args("/token/{id}")),
            (r"/ui", StatusPageHandler, args("/ui")),
            (r"/ui/", StatusPageHandler, args("/ui/")),
            (r"/ui/([^/]+)", StatusPageHandler, args("/ui/{file}")),
            (r"/metrics", MetricsHandler, args("/metrics")),
        ],
        default_handler_class=NotFoundHandler, default_handler_args=args("unmatched"),
        log_function=log_request,
    )
