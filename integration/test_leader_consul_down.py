"""Leader election while Consul is stopped and restarted, or not there yet.

Each test runs an agent of its own (with its data on disk, so that it survives a
restart on the same HTTP port), never the shared one.
"""

import time

import pytest

from genisys.devconsul import DevConsul, free_port
from integration.test_leader import (
    FAST,
    MARGIN,
    LeadershipMonitor,
    health,
    leaders,
    registrations_of,
    replica_id,
    single_leader,
)
from tests.support import Replica, unique_prefix, wait_until

# Event-loop and sampling latency on top of the margin.
SLACK = 0.5


@pytest.fixture
def replicas():
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


def test_consul_restarted_under_three_replicas(tmp_path, replicas):
    agent = DevConsul(data_dir=str(tmp_path / "consul-data")).start()
    try:
        prefix = unique_prefix()
        replicas += [Replica(agent.address, prefix, FAST).start() for _ in range(3)]
        with LeadershipMonitor(replicas) as monitor:
            first = single_leader(replicas)
            agent.stop()
            stopped_at = time.monotonic()
            # Past the check TTL: Consul would have expired the session by now.
            time.sleep(MARGIN + SLACK + 2.0)
            assert monitor.claims_since(stopped_at + MARGIN + SLACK) == []
            for replica in replicas:
                assert replica.process.poll() is None, replica.log()
                assert health(replica)["leader"] is False
            assert "lost leadership: no word from Consul" in first.log()

            agent.start()
            back_at = time.monotonic()
            leader = single_leader(replicas, timeout=30)
            print(f"\na leader again {time.monotonic() - back_at:.2f}s after Consul answered")
            time.sleep(1.0)
            assert leaders(replicas) == [leader]
        assert monitor.overlaps() == []
        for replica in replicas:
            assert replica.process.poll() is None, replica.log()
            assert replica.request("GET", "/leader").json()["id"] == replica_id(leader)
        assert [replica.stop() for replica in replicas] == [0, 0, 0]
    finally:
        agent.stop()


def test_a_replica_started_while_consul_is_down_joins_when_it_comes_up(tmp_path, replicas):
    port = free_port()
    prefix = unique_prefix()
    replicas += [Replica(f"127.0.0.1:{port}", prefix, FAST).start() for _ in range(2)]
    time.sleep(1.0)  # a few failed attempts at registering and campaigning
    for replica in replicas:
        assert replica.process.poll() is None, replica.log()
        body = replica.request("GET", "/health").json()
        assert body["status"] == "unavailable" and body["leader"] is False
    assert replica.request("GET", "/leader").status_code == 503

    agent = DevConsul(http_port=port, data_dir=str(tmp_path / "consul-data")).start()
    try:
        leader = single_leader(replicas, timeout=30)
        for replica in replicas:
            rid = replica_id(replica)
            wait_until(lambda: registrations_of(f"http://{agent.address}", rid)[0],
                       timeout=10, what=f"{rid} in the catalog")
            assert replica.request("GET", "/leader").json()["id"] == replica_id(leader)
        follower = next(r for r in replicas if r is not leader)
        wait_until(lambda: f"following replica {replica_id(leader)}" in follower.log(),
                   timeout=10, what="the follower to log whom it follows")
    finally:
        for replica in replicas:
            replica.stop()
        agent.stop()
