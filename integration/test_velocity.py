"""Velocity limits end to end: real Consul, replica processes and a counting connector
process that logs every order it receives (bench/counting_connector.py --order-log)."""

import json
import re
import signal

import pytest

from integration.test_readme import README, httpie, shell_block
from tests.connector_helpers import ConnectorProcess, unique
from tests.support import wait_until

FAST = {"connector": {"poll_interval": "30s", "timeout": "2s"},
        "leader": {"check_ttl": "2s", "lock_delay": "1s"}}
# A step's time is taken before it is recorded in Consul and its orders sent, so the
# connector may receive one step's orders a little later after that time than the next
# step's: the cooldown between two received orders is checked with this much slack.
SLACK = 0.25


@pytest.fixture
def counting_log(tmp_path):
    """A counting connector, and the orders of a service it received:
    [(time.time(), number)]."""
    orders = tmp_path / "orders.log"
    with ConnectorProcess("bench.counting_connector", "--order-log", str(orders),
                          log_path=tmp_path / "counting.log") as connector:
        def received(service):
            lines = orders.read_text().splitlines() if orders.exists() else []
            arrived = [line.split() for line in lines if not line.endswith(" done")]
            return [(float(at), int(number)) for at, name, number in arrived
                    if name == service]
        yield connector, received


def leader_of(replicas):
    leaders = [r for r in replicas if r.process.poll() is None
               and r.request("GET", "/health").json().get("leader")]
    return leaders[0] if len(leaders) == 1 else None


def limited_service(replica, connector, limits):
    """A service known at 0 on the connector's compute, with its own `limits`."""
    assert replica.request("POST", "/compute", {"name": "local",
                                                "connector": connector.url}).status_code == 201
    service = unique("svc")
    assert replica.request("POST", f"/service/{service}/scale", {"number": 0}).status_code == 202
    assert replica.request("PUT", f"/service/{service}/velocity", limits).status_code == 200
    return service


def test_a_scale_beyond_max_step_arrives_in_steps(start_replica, counting_log):
    connector, received = counting_log
    replica = start_replica(FAST)
    service = limited_service(replica, connector, {"max_step": 2, "up_cooldown": "1s"})

    response = replica.request("POST", f"/service/{service}/scale", {"number": 6})
    assert response.status_code == 202
    assert response.json()["desired"] == 6  # the total is set at once; the orders step
    stepping = wait_until(lambda: replica.request("GET", f"/service/{service}").json()[
        "stepping"], what="the status to say the service is stepping")
    assert stepping.startswith(("stepping: 2 of 6, next step up after ",
                                "stepping: 4 of 6, next step up after "))
    wait_until(lambda: connector.running(service) == 6, timeout=20, what="6 running")
    orders = received(service)
    assert [number for _, number in orders] == [2, 4, 6]
    assert all(b - a >= 1.0 - SLACK for (a, _), (b, _) in zip(orders, orders[1:])), orders
    wait_until(lambda: replica.request("GET", f"/service/{service}").json()["stepping"] is None,
               what="the status to stop saying stepping")
    events = replica.request("GET", f"/service/{service}/events").json()["events"]
    assert [(e["from"], e["to"], e["reason"]) for e in reversed(events)] == [
        (0, 2, "placement 6, observed 0: a step of the velocity limits"),
        (2, 4, "placement 6, observed 2: a step of the velocity limits"),
        (4, 6, "placement 6, observed 4")]


def test_a_step_moves_every_compute_at_once(start_replica, tmp_path, counting_log):
    # Each compute's worker sends its own part of a step: a's and b's first orders go
    # together, not a cooldown apart, and the second step waits out the cooldown. (A
    # compute whose count is not known when a step is taken joins the next one: both are
    # observed first.)
    a, received_a = counting_log
    with ConnectorProcess("bench.counting_connector", "--order-log", str(tmp_path / "b.log"),
                          log_path=tmp_path / "b-connector.log") as b:
        replica = start_replica({**FAST, "placement": {"strategy": "spread"}})
        service = limited_service(replica, a, {"max_step": 2, "up_cooldown": "4s"})
        assert replica.request("POST", "/compute", {"name": "b",
                                                    "connector": b.url}).status_code == 201
        wait_until(lambda: replica.request("GET", f"/service/{service}").json()["observed"]
                   == {"local": 0, "b": 0}, what="both computes observed")
        assert replica.request("POST", f"/service/{service}/scale",
                               {"number": 8}).json()["placement"] == {"local": 4, "b": 4}
        wait_until(lambda: (a.running(service), b.running(service)) == (4, 4), timeout=20,
                   what="4 running on each compute")
        lines = (tmp_path / "b.log").read_text().splitlines()
        received_b = [(float(at), int(n)) for at, name, n in
                      (line.split() for line in lines if not line.endswith(" done"))
                      if name == service]
    on_a, on_b = received_a(service), received_b
    assert [n for _, n in on_a] == [n for _, n in on_b] == [2, 4]
    first, second = (on_a[0][0], on_b[0][0]), (on_a[1][0], on_b[1][0])
    assert abs(first[0] - first[1]) < 4.0 / 2  # one step, not two
    assert min(second) - max(first) >= 4.0 - SLACK


def test_a_new_leader_waits_out_the_cooldown_of_the_order_its_predecessor_sent(
        start_replica, counting_log):
    connector, received = counting_log
    replicas = [start_replica(FAST), start_replica(FAST)]
    leader = wait_until(lambda: leader_of(replicas), timeout=15, what="a leader")
    cooldown = 8.0  # longer than a failover with FAST's check TTL and lock-delay
    service = limited_service(leader, connector, {"max_step": 1, "up_cooldown": f"{cooldown}s"})

    assert leader.request("POST", f"/service/{service}/scale", {"number": 3}).status_code == 202
    wait_until(lambda: received(service), what="the first order")
    leader.stop(signal.SIGKILL)  # right after its order: it may not even have recorded it
    follower = next(r for r in replicas if r is not leader)
    wait_until(lambda: leader_of([follower]), timeout=30, what="a new leader")

    wait_until(lambda: len(received(service)) >= 2, timeout=40, what="the second order")
    (first, one), (second, two) = received(service)[:2]
    assert (one, two) == (1, 2)
    assert second - first >= cooldown - SLACK
    wait_until(lambda: connector.running(service) == 3, timeout=30, what="3 running")
    assert [number for _, number in received(service)] == [1, 2, 3]


def test_the_readmes_example(start_replica, counting_log):
    connector, received = counting_log
    replica = start_replica(FAST)
    assert replica.request("POST", "/compute", {"name": "local",
                                                "connector": connector.url}).status_code == 201
    ports = {"7001": replica.port}
    known, limit, show, scale, status, unlimited, reset = shell_block(
        "service/web/velocity max_step:=2")
    httpie(known, ports)
    shown = json.loads(re.search(r"```json\n(\{\"service\": \"web\", \"max_step\".*?)```",
                                 README, re.DOTALL).group(1))
    assert httpie(limit, ports) == shown
    assert httpie(show, ports) == shown
    assert httpie(scale, ports)["desired"] == 6
    stepping = wait_until(lambda: httpie(status, ports)["stepping"], what="stepping")
    assert stepping.startswith("stepping: 2 of 6, next step up after ")
    assert [number for _, number in received("web")] == [2]  # the next one in 30 s
    assert httpie(unlimited, ports)["max_step"] is None
    answer = httpie(reset, ports)
    assert (answer["max_step"], set(answer["source"].values())) == (None, {"default"})
