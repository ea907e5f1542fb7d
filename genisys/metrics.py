"""Prometheus metrics: the replica's and the connector kit's, and their /metrics page.

Names follow controller-runtime and client-go. No label takes a service name: the number
of series must not grow with the number of services.

Each replica (ConsulStore owns its ReplicaMetrics) and each kit Connector has its own
registry, never prometheus_client's global one, so that several servers built in one
test process do not count into each other.

GENISYS_METRICS=off makes the recorders no-ops (the metrics are still exposed, at 0):
the benchmarks use it to measure what instrumentation costs.
"""

import os
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

# The text format every Prometheus version reads (generate_latest writes it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SWITCH = "GENISYS_METRICS"

# The *_created series (each counter's and histogram's start time) would double the
# series for what process_start_time_seconds already says.
disable_created_metrics()

# Connector calls and Consul requests take milliseconds; a reconcile pass over thousands
# of services or a blocking query takes seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0)

SERVICE_STATES = ("managed", "converged", "failing", "paused", "short")
FULL_CYCLE_REASONS = ("poll", "start", "computes", "retry")
REQUEUE_REASONS = ("conflict", "in_progress", "unavailable")


def enabled() -> bool:
    return os.environ.get(SWITCH, "on").lower() not in ("off", "0", "false", "no")


class ReplicaMetrics:
    """Every metric of a Genisys replica, with one recorder method per event."""

    def __init__(self):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)  # process_*: CPU, memory, open files, start
        self.leader_status = Gauge(
            "genisys_leader_status", "1 while this replica leads, else 0.", registry=registry)
        self.reconcile_total = Counter(
            "genisys_reconcile_total", "Full reconcile passes run by the leader, by result.",
            ["result"], registry=registry)
        self.reconcile_duration = Histogram(
            "genisys_reconcile_duration_seconds", "Time a full reconcile pass took.",
            buckets=_BUCKETS, registry=registry)
        self.full_cycles = Counter(
            "genisys_reconcile_full_cycles_total", "Full passes over every service, by reason "
            "(poll: the safety net every poll_interval; start: a new term; computes: the "
            "registry changed; retry: the previous pass failed).", ["reason"],
            registry=registry)
        self.requeues = Counter(
            "genisys_reconcile_requeues_total", "Services handled again, alone, by reason "
            "(conflict: a placement check-and-set lost to another writer; in_progress: an "
            "order in progress re-observed; unavailable: the local view was not in sync).",
            ["reason"], registry=registry)
        self.orders_total = Counter(
            "genisys_orders_total", "Scale orders sent to connectors.",
            ["compute", "direction", "result"], registry=registry)
        self.connector_duration = Histogram(
            "genisys_connector_request_duration_seconds",
            "Time a call to a connector took, by compute and call.",
            ["compute", "call"], buckets=_BUCKETS, registry=registry)
        self.connector_errors = Counter(
            "genisys_connector_errors_total", "Failed calls to connectors, by compute and kind.",
            ["compute", "kind"], registry=registry)
        self.services = Gauge(
            "genisys_services", "Services the leader manages, by state (as of its last full "
            "cycle).", ["state"], registry=registry)
        self.consul_duration = Histogram(
            "genisys_consul_request_duration_seconds",
            "Time a request to Consul took, by operation.",
            ["op"], buckets=_BUCKETS, registry=registry)
        self.view_lag = Gauge(
            "genisys_view_lag_seconds", "How long a local view of a Consul prefix has been "
            "out of sync (0 while its watch answers).", ["view"], registry=registry)
        self.http_requests = Counter(
            "genisys_http_requests_total", "API requests answered, by route, method and code.",
            ["route", "method", "code"], registry=registry)
        self.http_duration = Histogram(
            "genisys_http_request_duration_seconds", "Time an API request took, by route and "
            "method.", ["route", "method"], buckets=_BUCKETS, registry=registry)
        for state in SERVICE_STATES:
            self.services.labels(state)
        for result in ("success", "error"):
            self.reconcile_total.labels(result)
        for reason in FULL_CYCLE_REASONS:
            self.full_cycles.labels(reason)
        for reason in REQUEUE_REASONS:
            self.requeues.labels(reason)
        # Label children cached by their label values: one dict lookup per request.
        self._http: dict[tuple, tuple] = {}
        self._consul: dict[str, object] = {}
        self._calls: dict[tuple[str, str], object] = {}  # one per (compute, call) pair
        if not enabled():
            for name in ("http", "consul", "connector_call", "connector_error", "order",
                         "reconciled", "count_services", "full_cycle", "requeue"):
                setattr(self, name, _ignore)

    def watch_leader(self, is_leader: Callable[[], bool]) -> None:
        """Read the leader status from `is_leader` at each scrape: never stale."""
        self.leader_status.set_function(lambda: 1.0 if is_leader() else 0.0)

    def watch_view(self, view: str, out_of_sync_since: Callable[[], float | None]) -> None:
        """The view's lag, computed at each scrape from when it lost sync (monotonic)."""
        def lag() -> float:
            since = out_of_sync_since()
            return 0.0 if since is None else time.monotonic() - since
        self.view_lag.labels(view).set_function(lag)

    def http(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method, code)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (self.http_requests.labels(route, method, str(code)),
                                          self.http_duration.labels(route, method))
        children[0].inc()
        children[1].observe(seconds)

    def consul(self, op: str, seconds: float) -> None:
        child = self._consul.get(op)
        if child is None:
            child = self._consul[op] = self.consul_duration.labels(op)
        child.observe(seconds)

    def connector_call(self, compute: str, call: str, seconds: float) -> None:
        child = self._calls.get((compute, call))
        if child is None:
            child = self._calls[compute, call] = self.connector_duration.labels(compute, call)
        child.observe(seconds)

    def connector_error(self, compute: str, kind: str) -> None:
        self.connector_errors.labels(compute, kind).inc()

    def order(self, compute: str, direction: str, result: str) -> None:
        self.orders_total.labels(compute, direction, result).inc()

    def reconciled(self, ok: bool, seconds: float) -> None:
        self.reconcile_total.labels("success" if ok else "error").inc()
        self.reconcile_duration.observe(seconds)

    def full_cycle(self, reason: str) -> None:
        self.full_cycles.labels(reason).inc()

    def requeue(self, reason: str) -> None:
        self.requeues.labels(reason).inc()

    def count_services(self, counts: dict[str, int]) -> None:
        for state in SERVICE_STATES:
            self.services.labels(state).set(counts.get(state, 0))


class KitMetrics:
    """A connector's own metrics: the orders it carried out, per backend."""

    def __init__(self, backend: str):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        self.backend = backend
        self.orders_total = Counter(
            "genisys_connector_orders_total", "Scale orders this connector received, by "
            "result (done, replaced by a newer order, refused, failed).",
            ["backend", "result"], registry=registry)
        self.order_duration = Histogram(
            "genisys_connector_order_duration_seconds", "Time from an order's arrival to its "
            "answer, by result.", ["backend", "result"], buckets=_BUCKETS, registry=registry)
        self.services_defined = Gauge(
            "genisys_connector_services_defined", "Services defined on this connector.",
            ["backend"], registry=registry)
        if not enabled():
            self.order = _ignore

    def watch_definitions(self, count: Callable[[], int]) -> None:
        self.services_defined.labels(self.backend).set_function(count)

    def order(self, result: str, seconds: float) -> None:
        self.orders_total.labels(self.backend, result).inc()
        self.order_duration.labels(self.backend, result).observe(seconds)


def _ignore(*args) -> None:
    """A recorder with metrics switched off."""


def consul_op(method: str, path: str, params) -> str:
    """The `op` label of a Consul request: what kind of request it is, never a key."""
    area = path.removeprefix("/v1/").split("/", 1)[0]
    if area == "kv":
        if method != "GET":
            return f"kv_{method.lower()}"
        return "kv_watch" if "index" in dict(params or ()) else "kv_get"
    if area in ("txn", "session", "agent", "catalog", "status", "health"):
        return area
    return "other"


def direction(observed: int, number: int) -> str:
    """The `direction` label of a scale order."""
    return "up" if number > observed else "down"


class MetricsPage:
    """GET /metrics in Prometheus' text format; mixed into the API's and the kit's base
    handler, which set `metrics_registry`."""

    roles = {"GET": "read"}
    metrics_registry: CollectorRegistry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(generate_latest(self.metrics_registry))
