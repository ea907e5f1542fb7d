"""The scaling engine end to end: real Consul, real process connectors, replica processes."""

import json
import os
import re
import signal
import sys

import pytest

from genisys.devconsul import free_port
from tests.connector_helpers import ConnectorProcess, processes_of, unique
from tests.support import ROOT, wait_until

FAST = {"connector": {"poll_interval": "1s", "timeout": "1s"},
        "leader": {"check_ttl": "2s", "lock_delay": "1s"}}
SERVER = [sys.executable, str(ROOT / "examples" / "demo_service.py")]


@pytest.fixture
def connectors(tmp_path):
    started = []

    def start(name):
        connector = ConnectorProcess("genisys.connectors.process", "--grace", "2",
                                     log_path=tmp_path / f"{name}.log")
        started.append(connector)
        return connector

    yield start
    for connector in started:
        connector.__exit__(None, None, None)


@pytest.fixture
def service():
    return unique("svc")


def define(connector, service):
    status, _ = connector.call("POST", "/service", {"name": service, "command": SERVER})
    assert status == 201


def add_compute(replica, name, url):
    assert replica.request("POST", "/compute", {"name": name, "connector": url}).status_code == 201


def leader_of(replicas):
    leaders = [r for r in replicas if r.process.poll() is None
               and r.request("GET", "/health").json().get("leader")]
    return leaders[0] if len(leaders) == 1 else None


def converged(replica, connectors_by_compute, service, placement):
    """Both the connectors and GET /service show exactly `placement`."""
    counts = {c: conn.running(service) for c, conn in connectors_by_compute.items()}
    if counts != {c: placement.get(c, 0) for c in connectors_by_compute}:
        return False
    record = replica.request("GET", f"/service/{service}").json()
    return record["observed"] == counts and record["placement"] == placement


def test_scale_on_two_computes_converges_and_shows_in_get_service(start_replica, connectors,
                                                                   service):
    replica = start_replica(FAST)
    one, two = connectors("one"), connectors("two")
    for name, connector in (("one", one), ("two", two)):
        define(connector, service)
        add_compute(replica, name, connector.url)
    by_compute = {"one": one, "two": two}

    replica.request("POST", f"/service/{service}/scale", {"number": "3", "compute": "two"})
    wait_until(lambda: converged(replica, by_compute, service, {"two": 3}), timeout=15,
               what="3 on compute two")
    assert len(processes_of(service)) == 3

    replica.request("POST", f"/service/{service}/scale", {"number": 5})
    wait_until(lambda: converged(replica, by_compute, service, {"one": 2, "two": 3}), timeout=15,
               what="5 in all, the growth on the first compute")

    replica.request("POST", f"/service/{service}/scale", {"number": 0})
    wait_until(lambda: converged(replica, by_compute, service, {}), timeout=15, what="0")
    wait_until(lambda: not processes_of(service), timeout=10, what="every instance to exit")
    assert re.search(rf"scaling {service} on two from 0 to 3 \(term \d+\)", replica.log())


def test_drift_is_restored_within_a_poll_interval(start_replica, connectors, service):
    replica = start_replica(FAST)
    connector = connectors("local")
    define(connector, service)
    add_compute(replica, "local", connector.url)
    replica.request("POST", f"/service/{service}/scale", {"number": 2})
    wait_until(lambda: connector.running(service) == 2, timeout=15, what="2 running")

    victim = next(iter(processes_of(service)))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in processes_of(service), timeout=5, what="the kill")
    # One poll interval (1 s) plus the time to start a process.
    wait_until(lambda: len(processes_of(service)) == 2 and connector.running(service) == 2,
               timeout=5, what="the leader to restore the killed instance")
    assert re.search(rf"scaling {service} on local from 1 to 2", replica.log())


def test_a_total_written_by_another_tool_converges(start_replica, connectors, service, consul,
                                                    prefix):
    replica = start_replica(FAST)
    connector = connectors("local")
    define(connector, service)
    add_compute(replica, "local", connector.url)

    consul.kv_put(f"{prefix}resources/{service}", "4")
    wait_until(lambda: connector.running(service) == 4, timeout=15, what="4 running")
    assert json.loads(consul.kv_get(f"{prefix}placements/{service}")) == {"local": 4}
    assert replica.request("GET", f"/service/{service}").json()["desired"] == 4


def test_failing_computes_are_reported_and_the_others_converge(start_replica, connectors,
                                                               faulty, service):
    replica = start_replica(FAST)
    good = connectors("good")
    define(good, service)
    add_compute(replica, "good", good.url)
    add_compute(replica, "down", f"http://127.0.0.1:{free_port()}")
    for fault in ("error", "slow", "badjson"):
        add_compute(replica, fault, faulty(fault))

    replica.request("POST", f"/service/{service}/scale", {"number": 2, "compute": "good"})
    wait_until(lambda: good.running(service) == 2, timeout=15, what="the good compute")
    expected = {"down": "unreachable", "error": "answered 500",
                "slow": "did not answer in time", "badjson": "invalid JSON"}

    def all_reported():
        record = replica.request("GET", f"/service/{service}").json()
        errors = record["errors"]
        return record if set(errors) == set(expected) and all(
            expected[c] in errors[c] for c in expected) else None

    record = wait_until(all_reported, timeout=15, what="every failure to be reported")
    assert record["observed"] == {"good": 2}


def test_the_loop_survives_junk_and_changes_during_a_cycle(start_replica, connectors,
                                                           faulty, service, consul,
                                                           prefix):
    """Each of these stopped the 2015 poller for good: here the next cycle runs."""
    replica = start_replica(FAST)
    connector = connectors("local")
    define(connector, service)
    add_compute(replica, "local", connector.url)
    # A slow compute makes each cycle last about a second: changes land mid-cycle.
    add_compute(replica, "slow", faulty("slow", "--delay", "0.8"))
    consul.kv_put(f"{prefix}resources/junk-total", "many")
    consul.kv_put(f"{prefix}placements/junk-placement", "{not json")
    consul.kv_put(f"{prefix}resources/binary", b"\xff\xfe")
    for number in (1, 3, 2):
        replica.request("POST", f"/service/{service}/scale", {"number": number,
                                                              "compute": "local"})
    add_compute(replica, "late", f"http://127.0.0.1:{free_port()}")
    wait_until(lambda: connector.running(service) == 2, timeout=15, what="the last number")

    def last_cycle():
        return replica.request("GET", "/health").json()["last_cycle"]

    before = wait_until(last_cycle, timeout=10, what="a completed cycle")["at"]
    wait_until(lambda: last_cycle()["at"] != before, timeout=10, what="another completed cycle")
    assert last_cycle()["ok"] is True
    assert replica.process.poll() is None


def test_followers_take_scale_requests_and_a_new_leader_finishes_a_scale_up(
        start_replica, connectors, service, tmp_path):
    replicas = [start_replica(FAST) for _ in range(3)]
    connector = connectors("local")
    define(connector, service)
    add_compute(replicas[0], "local", connector.url)
    leader = wait_until(lambda: leader_of(replicas), timeout=15, what="a leader")
    followers = [r for r in replicas if r is not leader]

    followers[0].request("POST", f"/service/{service}/scale", {"number": 2})
    wait_until(lambda: connector.running(service) == 2, timeout=15, what="2 running")

    followers[1].request("POST", f"/service/{service}/scale", {"number": 6})
    leader.stop(signal.SIGKILL)
    new_leader = wait_until(lambda: leader_of(followers), timeout=30, what="a new leader")
    wait_until(lambda: connector.running(service) == 6, timeout=30, what="6 running")
    # The leader records the count once the connector has answered: a moment later.
    wait_until(lambda: new_leader.request("GET", f"/service/{service}").json()["observed"]
               == {"local": 6}, timeout=10, what="the new leader to record 6")

    # Orders reached the connector in non-decreasing terms: never two leaders at once.
    terms = [int(t) for t in re.findall(rf"scale {service} from \d+ to \d+ \(term (\d+)\)",
                                        connector.log())]
    assert terms and terms == sorted(terms)
    assert "refused a scale order" not in connector.log()
