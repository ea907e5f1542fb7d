"""A dead compute's share moves to the healthy one and comes back (README "Failover"):
real Consul, a replica process, two real connector processes.

A connector "dies" by SIGSTOP: every call to it times out while its instances keep
running, as on a compute cut off by the network; SIGCONT brings it back with its old
counts, so its surplus must really be scaled to 0."""

import json
import signal

import pytest

from tests.connector_helpers import ConnectorProcess, unique
from tests.support import wait_until

FAILOVER = {"connector": {"poll_interval": "500ms", "timeout": "500ms"},
            "placement": {"strategy": "spread", "failover_after": "2s",
                          "failback_after": "2s", "failback_step": 1},
            "leader": {"check_ttl": "2s", "lock_delay": "1s"}}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def connectors(tmp_path):
    started = [ConnectorProcess("bench.counting_connector", log_path=tmp_path / f"{n}.log")
               for n in ("a", "b")]
    yield started
    for connector in started:
        connector.process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
        connector.stop()


def spread_over(replica, connectors) -> str:
    """A service of 4, 2 on each compute, running."""
    a, b = connectors
    for name, connector in (("a", a), ("b", b)):
        answer = replica.request("POST", "/compute", {"name": name, "connector": connector.url})
        assert answer.status_code == 201, answer.text
    service = unique("web")
    assert replica.request("POST", f"/service/{service}/scale",
                           {"number": 4}).json()["placement"] == {"a": 2, "b": 2}
    wait_until(lambda: a.running(service) == 2 and b.running(service) == 2, timeout=20,
               what="2 on each compute")
    return service


def leading(replica) -> bool:
    return replica.request("GET", "/health").json()["leader"] is True


def test_a_dead_compute_share_moves_and_comes_back(start_replica, consul, prefix, connectors):
    a, b = connectors
    replica = start_replica(FAILOVER)
    service = spread_over(replica, connectors)

    b.process.send_signal(signal.SIGSTOP)
    wait_until(lambda: a.running(service) == 4, timeout=30, what="b's share to run on a")
    shown = replica.request("GET", f"/service/{service}").json()
    assert shown["placement"] == {"a": 4}
    assert json.loads(consul.kv_get(f"{prefix}failover/{service}")) == {"b": 2}
    [moved] = [e for e in replica.request("GET", f"/service/{service}/events").json()["events"]
               if e["result"] == "moved"]
    assert moved["reason"].startswith("compute b dead for "), moved
    assert moved["reason"].endswith(f"s: 2 of {service} moved to a (+2)"), moved
    assert moved["reason"] in replica.log()

    b.process.send_signal(signal.SIGCONT)
    # Its surplus goes first: it answers, and its placement there is 0...
    wait_until(lambda: b.running(service) == 0, timeout=20, what="b's surplus to be scaled to 0")
    assert a.running(service) == 4
    # ...then, after failback_after, its share comes back one instance at a time.
    wait_until(lambda: (a.running(service), b.running(service)) == (2, 2), timeout=30,
               what="the share to come back to b")
    wait_until(lambda: consul.kv_get(f"{prefix}failover/{service}") is None, timeout=10,
               what="the failover record to go once the share is back")
    reasons = [e["reason"] for e in replica.request(
        "GET", f"/service/{service}/events").json()["events"] if e["result"] == "moved"]
    assert [r.split(": ", 1)[1] for r in reasons[:2]] == [
        f"1 of {service} moved back from a (+1)"] * 2, reasons


def test_a_new_leader_moves_back_what_its_predecessor_moved(start_replica, consul, prefix,
                                                            connectors):
    """The record of what was moved is in Consul: without it the new leader would see a
    placement {"a": 4} that matches its total, and leave b empty for ever."""
    a, b = connectors
    first = start_replica(FAILOVER)
    wait_until(lambda: leading(first), timeout=20, what="the first replica to lead")
    second = start_replica(FAILOVER)
    service = spread_over(first, connectors)
    b.process.send_signal(signal.SIGSTOP)
    wait_until(lambda: a.running(service) == 4, timeout=30, what="b's share to run on a")

    first.stop()  # SIGTERM: it hands over at once
    wait_until(lambda: leading(second), timeout=20, what="the second replica to lead")
    b.process.send_signal(signal.SIGCONT)
    wait_until(lambda: (a.running(service), b.running(service)) == (2, 2), timeout=40,
               what="the new leader to move the share back to b")
    assert "moved back" in second.log()
