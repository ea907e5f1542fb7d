"""Faulty connectors against a replica process: each fault stays with its (service, compute)
pair, is reported in GET /service, and every other pair converges."""

import json
import sys

import pytest

from genisys.engine.calls import MAX_SENTENCE
from tests.connector_helpers import ConnectorProcess, unique
from tests.support import ROOT, wait_until

FAST = {"connector": {"poll_interval": "1s", "timeout": "1s"},
        "leader": {"check_ttl": "2s", "lock_delay": "1s"}}
DEMO = [sys.executable, str(ROOT / "examples" / "demo_service.py")]

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def good(tmp_path):
    with ConnectorProcess("genisys.connectors.process", "--grace", "2",
                          log_path=tmp_path / "good.log") as connector:
        yield connector


def add_compute(replica, name, url):
    answer = replica.request("POST", "/compute", {"name": name, "connector": url})
    assert answer.status_code == 201, answer.text


def scale(replica, service, number, compute):
    answer = replica.request("POST", f"/service/{service}/scale",
                             {"number": number, "compute": compute})
    assert answer.status_code in (200, 202), answer.text


def record(replica, service) -> dict:
    return replica.request("GET", f"/service/{service}").json()


def define(connector, service):
    assert connector.call("POST", "/service", {"name": service, "command": DEMO})[0] == 201


def test_a_compute_whose_url_curl_cannot_use_fails_alone(start_replica, consul, prefix, good):
    """It made every cycle fail with UnicodeEncodeError: no compute converged any more."""
    replica = start_replica(FAST)
    service = unique("svc")
    define(good, service)
    add_compute(replica, "good", good.url)
    # Written by another tool: the store reads it IDNA-encoded (http://xn--tda:7051), a
    # host that resolves nowhere.
    consul.kv_put(f"{prefix}computes/bad",
                  json.dumps({"name": "bad", "connector": "http://ü:7051"}))
    scale(replica, service, 2, "good")

    def converged():
        shown = record(replica, service)
        return shown if shown["observed"].get("good") == 2 and "bad" in shown["errors"] else None

    shown = wait_until(converged, timeout=20, what="good to converge, bad to be reported")
    assert shown["errors"]["bad"].startswith("http://xn--tda:7051 is unreachable"), shown
    assert "good" not in shown["errors"]
    assert good.call("GET", f"/service/{service}/status")[1] == {"running_resources": 2}
    assert replica.request("GET", "/health").json()["last_cycle"]["ok"] is True


def test_garbage_answers_stay_with_their_pair_and_an_empty_answer_is_success(
        start_replica, faulty):
    """Deep JSON raised RecursionError in every cycle; an HTML error page landed whole in
    the status; the Docker connector's empty 200 to an order counted as a failure."""
    replica = start_replica(FAST)
    service = unique("svc")
    for fault in ("deepjson", "html", "empty"):
        add_compute(replica, fault, faulty(fault))
    scale(replica, service, 2, "empty")

    def reported():
        shown = record(replica, service)
        return shown if (shown["observed"] == {"empty": 2}
                         and set(shown["errors"]) == {"deepjson", "html"}) else None

    shown = wait_until(reported, timeout=20, what="the empty answer to count, the rest to fail")
    assert "answered invalid JSON to GET /" in shown["errors"]["deepjson"]
    html_error = shown["errors"]["html"]
    assert "answered 500 to GET /" in html_error and "Internal Server Error" in html_error
    assert "<" not in html_error and len(html_error) < 200
    assert shown["warnings"] == {}
    assert "scaling " + service + " on empty failed" not in replica.log()


def test_a_connector_that_ignores_its_orders_gets_a_warning(start_replica, faulty):
    """Both showed `errors: {}` while nothing converged."""
    replica = start_replica(FAST)
    add_compute(replica, "liar", faulty("liar"))
    add_compute(replica, "huge", faulty("huge"))
    ignored, inflated = unique("ignored"), unique("inflated")
    scale(replica, ignored, 3, "liar")
    scale(replica, inflated, 3, "huge")

    def warning(service, compute):
        return wait_until(lambda: record(replica, service)["warnings"].get(compute),
                          timeout=20, what=f"a warning for {service} on {compute}")

    ignored_warning = warning(ignored, "liar")
    assert ignored_warning.startswith("ordered 3, still reports 0 after ")
    assert ignored_warning.endswith(" orders")
    assert warning(inflated, "huge") == "reports 1000000000 running, more than the 3 placed"
    assert record(replica, ignored)["errors"] == {}

    # Ordered 0, the liar reports what was ordered: its warning goes.
    scale(replica, ignored, 0, "liar")
    wait_until(lambda: "liar" not in record(replica, ignored)["warnings"], timeout=20,
               what="the warning to clear")


def test_a_stray_term_header_does_not_lock_out_the_leader(start_replica, consul, prefix, good):
    """One order with X-Genisys-Term: 999999999999999999 made every later order of the
    real leader answer 409 until the connector restarted."""
    replica = start_replica(FAST)
    service = unique("svc")
    define(good, service)
    stray = good.call("POST", f"/service/{service}/scale", {"number": 0},
                      headers={"X-Genisys-Term": "999999999999999999"})
    assert stray[0] == 200
    add_compute(replica, "good", good.url)
    scale(replica, service, 2, "good")

    wait_until(lambda: good.call("GET", f"/service/{service}/status")[1]
               == {"running_resources": 2}, timeout=20, what="the order to go through")
    assert int(consul.kv_get(f"{prefix}term")) > 999_999_999_999_999_999
    wait_until(lambda: record(replica, service)["errors"] == {}, timeout=10, what="no errors")


def test_long_errors_on_many_services_do_not_stop_the_status_records(start_replica, consul,
                                                                     prefix, good):
    """Each error repeated a 2 KB connector URL: the leader's status transactions grew past
    Consul's 512 KiB limit and every cycle failed before recording any status."""
    replica = start_replica(FAST)
    service = unique("svc")
    define(good, service)
    add_compute(replica, "good", good.url)
    for i in range(5):
        add_compute(replica, f"far{i}", f"http://127.0.0.1:1/{i}" + "x" * 2000)
    for i in range(70):
        consul.kv_put(f"{prefix}resources/{service}-{i:02d}", "0")
    scale(replica, service, 1, "good")

    def recorded():
        # A service only full cycles record: it shares their transactions with the rest.
        # Totals written straight to Consul show after the bounded watch's pause (404 first).
        shown = record(replica, f"{service}-00")
        return shown if len(shown.get("errors", {})) == 5 else None

    shown = wait_until(recorded, timeout=30, what="the statuses with every compute's error")
    assert all(len(error) <= MAX_SENTENCE for error in shown["errors"].values()), shown
    assert all(error.endswith("...") for error in shown["errors"].values()), shown
    wait_until(lambda: replica.request("GET", "/health").json()["last_cycle"]["ok"],
               timeout=10, what="a full cycle that completes")
