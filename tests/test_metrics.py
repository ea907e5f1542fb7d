"""GET /metrics on a replica and on a connector, scraped and parsed with prometheus_client's
parser after a real scenario; the pure parts of genisys.metrics."""

import re
import sys

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from genisys.metrics import ReplicaMetrics, consul_op, direction
from genisys.plan import Desired, Observed
from genisys.engine.reconciler import service_states
from tests.connector_helpers import ConnectorProcess, unique
from tests.support import ROOT, wait_until

FAST = {"connector": {"poll_interval": "1s", "timeout": "1s"},
        "leader": {"check_ttl": "2s", "lock_delay": "1s"}}
SERVER = [sys.executable, str(ROOT / "examples" / "demo_service.py")]
README = (ROOT / "README.md").read_text()


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample at `url`/metrics: (name, labels) -> value."""
    response = requests.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def documented(table: str) -> set[str]:
    """The metric names of the README's Metrics table that follows `table`."""
    section = README[README.index("### Metrics"):README.index("### Running several replicas")]
    rows = section[section.index(table):].split("\n\n")[1]
    return set(re.findall(r"^\| `(genisys_\w+)`", rows, re.MULTILINE))


def undocumented(samples, names: set[str]) -> set[str]:
    """Sample names that belong to no documented metric, and documented names not exposed."""
    exposed = {name for name, _ in samples if name.startswith("genisys_")}
    suffixes = ("", "_bucket", "_count", "_sum")
    return ({name for name in exposed if not any(name.removesuffix(s) in names for s in suffixes)}
            | {name for name in names if not any(name + s in exposed for s in suffixes)})


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def connector(tmp_path):
    with ConnectorProcess("genisys.connectors.process", "--grace", "2",
                          log_path=tmp_path / "local.log") as process:
        yield process


def test_metrics_move_with_a_scale_a_failing_compute_its_removal_and_a_pause(
        start_replica, connector, faulty):
    service = unique("metrics")
    assert connector.call("POST", "/service", {"name": service, "command": SERVER})[0] == 201
    replica = start_replica(FAST)
    for name, url in (("local", connector.url), ("broken", faulty("error"))):
        response = replica.request("POST", "/compute", {"name": name, "connector": url})
        assert response.status_code == 201
    assert replica.request("POST", f"/service/{service}/scale",
                           {"number": 2, "compute": "local"}).status_code == 202
    assert replica.request("GET", "/no/such/path").status_code == 404

    def failing_and_scaled():
        samples = scrape(replica.url)
        return (value(samples, "genisys_services", state="failing") == 1
                and value(samples, "genisys_orders_total", compute="local", direction="up",
                          result="success") >= 1 and samples)

    samples = wait_until(failing_and_scaled, timeout=20, what="the order and the failure")
    assert value(samples, "genisys_leader_status") == 1
    assert value(samples, "genisys_reconcile_total", result="success") >= 1
    assert value(samples, "genisys_reconcile_duration_seconds_count") >= 1
    assert value(samples, "genisys_connector_request_duration_seconds_count",
                 compute="local", call="scale") >= 1
    # The faulty connector answers 500 to everything: refused, on that compute only.
    assert value(samples, "genisys_connector_errors_total", compute="broken", kind="refused") >= 1
    assert value(samples, "genisys_connector_errors_total", compute="local", kind="refused") == 0
    assert value(samples, "genisys_services", state="managed") == 1
    assert value(samples, "genisys_services", state="converged") == 0
    assert value(samples, "genisys_services", state="paused") == 0
    assert value(samples, "genisys_consul_request_duration_seconds_count", op="txn") >= 1
    assert value(samples, "genisys_consul_request_duration_seconds_count", op="kv_watch") >= 1
    for view in ("desired", "journal", "resources", "computes", "tokens"):
        assert value(samples, "genisys_view_lag_seconds", view=view) == 0
    # The route pattern, never the raw path: no label anywhere names the service.
    assert value(samples, "genisys_http_requests_total", route="/service/{svc}/scale",
                 method="POST", code="202") == 1
    assert value(samples, "genisys_http_requests_total", route="unmatched", method="GET",
                 code="404") == 1
    assert value(samples, "genisys_http_request_duration_seconds_count",
                 route="/compute", method="POST") == 2
    assert not [labels for _, labels in samples if any(service in v for _, v in labels)]
    assert undocumented(samples, documented("A replica's metrics")) == set()

    # The broken compute leaves: nothing fails any more and the service has converged.
    assert replica.request("DELETE", "/compute/broken").status_code == 204
    wait_until(lambda: value(scrape(replica.url), "genisys_services", state="converged") == 1,
               timeout=20, what="the service to count as converged")
    assert value(scrape(replica.url), "genisys_services", state="failing") == 0
    assert replica.request("POST", f"/service/{service}/pause").status_code == 200
    wait_until(lambda: value(scrape(replica.url), "genisys_services", state="paused") == 1,
               timeout=20, what="the service to count as paused")

    # The connector's own page: the orders it carried out, and one it refused.
    assert connector.call("POST", f"/service/{unique('undefined')}/scale", {"number": 1})[0] == 404
    kit = scrape(connector.url)
    assert value(kit, "genisys_connector_orders_total", backend="process", result="done") >= 1
    assert value(kit, "genisys_connector_orders_total", backend="process", result="refused") == 1
    assert value(kit, "genisys_connector_order_duration_seconds_count", backend="process",
                 result="done") >= 1
    assert value(kit, "genisys_connector_services_defined", backend="process") == 1
    assert undocumented(kit, documented("A connector's metrics")) == set()
    assert value(kit, "process_resident_memory_bytes") > 0


def test_a_follower_reports_that_it_does_not_lead(start_replica):
    leader = start_replica(FAST)
    wait_until(lambda: value(scrape(leader.url), "genisys_leader_status") == 1,
               timeout=15, what="the first replica to lead")
    follower = start_replica(FAST)
    assert value(scrape(follower.url), "genisys_leader_status") == 0
    assert value(scrape(follower.url), "genisys_reconcile_total", result="success") == 0


def test_consul_operations_are_named_by_kind_never_by_key():
    assert consul_op("GET", "/v1/kv/genisys/computes/web", None) == "kv_get"
    assert consul_op("GET", "/v1/kv/genisys/computes/", [("index", "7"), ("wait", "10s")]) \
        == "kv_watch"
    assert consul_op("PUT", "/v1/kv/genisys/leader", {"acquire": "x"}) == "kv_put"
    assert consul_op("PUT", "/v1/txn", None) == "txn"
    assert consul_op("PUT", "/v1/session/create", None) == "session"
    assert consul_op("PUT", "/v1/agent/check/pass/x", None) == "agent"
    assert consul_op("GET", "/v1/acl/token/self", None) == "other"


def test_service_states_count_failing_converged_and_paused_services():
    desired = Desired(computes={"a": "http://a", "b": "http://b"},
                      totals={"web": 2, "api": 1, "db": 3},
                      placements={"web": {"a": 2}, "api": {"b": 1}, "db": {"a": 3}},
                      paused=frozenset({"db", "gone"}))
    observed = Observed(counts={("web", "a"): 2, ("web", "b"): 0, ("api", "a"): 0,
                                ("db", "a"): 1, ("db", "b"): 0, ("catalog-only", "a"): 0},
                        errors={("api", "b"): "b did not answer in time."})
    managed = {"web", "api", "db", "catalog-only"}
    assert service_states(desired, managed, observed) == {
        "managed": 4, "failing": 1, "converged": 1, "paused": 1, "short": 0}


def test_service_states_count_services_whose_placement_is_short_of_their_total():
    desired = Desired(computes={"a": "http://a"}, totals={"web": 5, "api": 2},
                      placements={"web": {"a": 3}, "api": {"a": 2}})
    assert service_states(desired, {"web", "api"}, Observed())["short"] == 1


def test_orders_go_up_or_down():
    assert direction(1, 3) == "up"
    assert direction(3, 0) == "down"


def test_switched_off_metrics_record_nothing(monkeypatch):
    monkeypatch.setenv("GENISYS_METRICS", "off")
    metrics = ReplicaMetrics()
    metrics.http("/health", "GET", 200, 0.001)
    metrics.order("a", "up", "success")
    assert metrics.registry.get_sample_value(
        "genisys_http_requests_total", {"route": "/health", "method": "GET", "code": "200"}) \
        is None
    monkeypatch.delenv("GENISYS_METRICS")
    on = ReplicaMetrics()  # each has its own registry: they never count into each other
    on.http("/health", "GET", 200, 0.001)
    assert on.registry.get_sample_value(
        "genisys_http_requests_total", {"route": "/health", "method": "GET", "code": "200"}) == 1
    assert metrics.registry.get_sample_value(
        "genisys_http_requests_total", {"route": "/health", "method": "GET", "code": "200"}) \
        is None


def test_with_authentication_metrics_need_a_read_token_and_the_connector_its_token(
        start_replica, tmp_path):
    bootstrap = "bootstrap-" + "7" * 40
    replica = start_replica(env={"GENISYS_BOOTSTRAP_TOKEN": bootstrap})
    created = replica.request("POST", "/token", {"name": "prometheus", "role": "read"},
                              headers={"Authorization": f"Bearer {bootstrap}"})
    assert created.status_code == 201
    assert requests.get(f"{replica.url}/metrics", timeout=5).status_code == 401
    scraped = requests.get(f"{replica.url}/metrics", timeout=5,
                           headers={"Authorization": f"Bearer {created.json()['secret']}"})
    assert scraped.status_code == 200 and "genisys_leader_status" in scraped.text

    token_file = tmp_path / "token"
    token_file.write_text("connector-secret\n")
    with ConnectorProcess("genisys.connectors.process", "--token-file", str(token_file),
                          log_path=tmp_path / "connector.log") as connector:
        assert requests.get(f"{connector.url}/metrics", timeout=5).status_code == 401
        response = requests.get(f"{connector.url}/metrics", timeout=5,
                                headers={"Authorization": "Bearer connector-secret"})
        assert response.status_code == 200
        assert "genisys_connector_orders_total" in response.text
