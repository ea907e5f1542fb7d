"""Leader election across replica processes against a real Consul agent.

Replicas run with a 2 s check TTL and a 1 s lock-delay so that failovers are quick. A
LeadershipMonitor samples every replica's GET /health in a thread every 50 ms for the
whole test, and the test fails if two replicas ever claimed leadership at one instant.
"""

import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import requests

from tests.support import Replica, wait_until

FAST = {"leader": {"check_ttl": "2s", "lock_delay": "1s"}}
MARGIN = 1.0  # half of FAST's check TTL: a leader that lost Consul steps down within it


@dataclass(frozen=True)
class Sample:
    url: str
    start: float
    end: float
    leader: bool | None  # None: the replica did not answer


class LeadershipMonitor:
    """Samples GET /health of every replica, one after the other, every `interval`."""

    def __init__(self, replicas: list[Replica], interval: float = 0.05):
        self.replicas = replicas  # the caller's list: replicas it adds are sampled too
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "LeadershipMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            for replica in list(self.replicas):
                start = time.monotonic()
                try:
                    leader = requests.get(f"{replica.url}/health", timeout=2).json()["leader"]
                except (requests.RequestException, ValueError, KeyError):
                    leader = None
                self.samples.append(Sample(replica.url, start, time.monotonic(), leader))
            self._stop.wait(self.interval)

    def overlaps(self) -> list[tuple[Sample, Sample, Sample]]:
        """Claims that certainly overlapped: replica X said "leader" in two consecutive
        samples (so it led in between: re-election takes at least the lock-delay), and
        another replica said "leader" in a sample taken entirely between those two."""
        found = []
        samples = list(self.samples)
        for url in {s.url for s in samples}:
            own = [s for s in samples if s.url == url]
            for first, second in zip(own, own[1:]):
                if not (first.leader and second.leader) or second.start - first.end > 0.5:
                    continue
                found += [(first, other, second) for other in samples
                          if other.url != url and other.leader
                          and other.start >= first.end and other.end <= second.start]
        return found

    def claims_since(self, moment: float) -> list[Sample]:
        return [s for s in list(self.samples) if s.leader and s.start >= moment]

    def leader_claims(self) -> int:
        return sum(1 for s in list(self.samples) if s.leader)


def health(replica: Replica) -> dict:
    return requests.get(f"{replica.url}/health", timeout=2).json()


def leaders(replicas: list[Replica]) -> list[Replica]:
    found = []
    for replica in replicas:
        try:
            if health(replica)["leader"]:
                found.append(replica)
        except (requests.RequestException, ValueError, KeyError):
            pass
    return found


def single_leader(replicas: list[Replica], timeout: float = 30.0) -> Replica:
    def one():
        found = leaders(replicas)
        return found[0] if len(found) == 1 else None
    return wait_until(one, timeout=timeout, what="exactly one leader")


def replica_id(replica: Replica) -> str:
    return health(replica)["replica"]


def sessions_of(consul_url: str, rid: str) -> list[dict]:
    sessions = requests.get(f"{consul_url}/v1/session/list", timeout=5).json()
    return [s for s in sessions if s.get("Name") == f"genisys leader election: {rid}"
            or f"genisys-{rid}-ttl" in (s.get("Checks") or ())]


def registrations_of(consul_url: str, rid: str) -> tuple[list[dict], bool]:
    """Catalog entries of service genisys for this replica, and whether the agent has it."""
    catalog = requests.get(f"{consul_url}/v1/catalog/service/genisys", timeout=5).json()
    agent = requests.get(f"{consul_url}/v1/agent/services", timeout=5).json()
    return ([e for e in catalog if e["ServiceID"] == f"genisys-{rid}"],
            f"genisys-{rid}" in agent)


def test_three_replicas_elect_exactly_one_leader_and_agree_on_it(consul, start_replica):
    replicas = [start_replica(FAST) for _ in range(3)]
    with LeadershipMonitor(replicas) as monitor:
        leader = single_leader(replicas)
        time.sleep(1.0)  # a few heartbeats: nothing changes while all is well
        assert leaders(replicas) == [leader]
        leader_id = replica_id(leader)
        for replica in replicas:
            response = replica.request("GET", "/leader")
            assert response.status_code == 200
            body = response.json()
            assert set(body) == {"id", "address", "since", "term"}
            assert isinstance(body["term"], int) and body["term"] >= 1
            assert body["id"] == leader_id
            assert body["address"] == f"127.0.0.1:{leader.port}"
            assert datetime.fromisoformat(body["since"]).tzinfo is not None
        for replica in replicas:
            rid = replica_id(replica)
            catalog, on_agent = registrations_of(consul.url, rid)
            assert on_agent and len(catalog) == 1
            assert catalog[0]["ServicePort"] == replica.port
            assert catalog[0]["ServiceAddress"] == "127.0.0.1"
            assert len(sessions_of(consul.url, rid)) == 1
    assert monitor.overlaps() == []
    assert "I am the leader (term " in leader.log()
    for replica in replicas:
        if replica is not leader:
            assert f"following replica {leader_id}" in replica.log()


def test_kill_9_of_the_leader_hands_over_to_another_replica(start_replica):
    replicas = [start_replica(FAST) for _ in range(3)]
    with LeadershipMonitor(replicas) as monitor:
        leader = single_leader(replicas)
        old_id = replica_id(leader)
        survivors = [r for r in replicas if r is not leader]
        killed_at = time.monotonic()
        leader.process.kill()
        successor = single_leader(survivors, timeout=30)
        failover = time.monotonic() - killed_at
        print(f"\nfailover after kill -9: {failover:.2f}s (check_ttl 2s, lock_delay 1s)")
        time.sleep(0.5)
        assert leaders(survivors) == [successor]
        body = survivors[0].request("GET", "/leader").json()
        assert body["id"] == replica_id(successor) != old_id
    assert monitor.overlaps() == []
    assert all(r.process.poll() is None for r in survivors)
    assert "I am the leader" in successor.log()


def test_sigterm_of_the_leader_hands_over_and_leaves_nothing_behind(consul, start_replica):
    replicas = [start_replica(FAST) for _ in range(3)]
    with LeadershipMonitor(replicas) as monitor:
        leader = single_leader(replicas)
        old_id = replica_id(leader)
        survivors = [r for r in replicas if r is not leader]
        stopped_at = time.monotonic()
        leader.process.send_signal(signal.SIGTERM)
        successor = single_leader(survivors, timeout=30)
        failover = time.monotonic() - stopped_at
        assert leader.process.wait(timeout=15) == 0
        print(f"\nfailover after SIGTERM: {failover:.3f}s")
    assert monitor.overlaps() == []
    log = leader.log()
    # release, THEN destroy: the successor is spared Consul's lock-delay
    assert log.index("stopped leading: shutting down") < log.index("released the leader lock")
    assert "session destroyed" in log
    assert sessions_of(consul.url, old_id) == []
    assert registrations_of(consul.url, old_id) == ([], False)
    assert survivors[0].request("GET", "/leader").json()["id"] == replica_id(successor)
    assert len(sessions_of(consul.url, replica_id(successor))) == 1


def test_a_follower_stopped_gracefully_also_leaves_nothing_behind(consul, start_replica):
    replicas = [start_replica(FAST) for _ in range(2)]
    leader = single_leader(replicas)
    follower = next(r for r in replicas if r is not leader)
    rid = replica_id(follower)
    wait_until(lambda: sessions_of(consul.url, rid), what="the follower's session")
    assert follower.stop(signal.SIGINT) == 0
    assert sessions_of(consul.url, rid) == []
    assert registrations_of(consul.url, rid) == ([], False)
    assert leaders([leader]) == [leader]


def test_a_leader_killed_and_restarted_with_its_id_does_not_keep_the_lock(consul, start_replica):
    # Same id: the new process passes the same TTL check, which would keep the dead
    # process's session (and the lock) alive forever; the replica retires it on start.
    settings = {"leader": {**FAST["leader"], "id": "phoenix"}}
    first = start_replica(settings)
    wait_until(lambda: leaders([first]), timeout=10, what="the first life to lead")
    (old_session,) = [s["ID"] for s in sessions_of(consul.url, "phoenix")]
    first.process.kill()
    first.process.wait()
    second = start_replica(settings)
    wait_until(lambda: leaders([second]), timeout=30, what="the second life to lead")
    assert old_session not in [s["ID"] for s in sessions_of(consul.url, "phoenix")]
    # It waited for the dead life's check to lapse (Consul then drops its session).
    assert "the check of replica id phoenix passed recently" in second.log()


def test_a_replica_refuses_to_start_beside_a_live_twin(consul, start_replica):
    """Two replicas with one id: the second used to retire the first's session, and after
    a kill -9 of one twin the cluster had no leader for 30-40 s and counting."""
    settings = {"leader": {**FAST["leader"], "id": "twin"}}
    first = start_replica(settings)
    wait_until(lambda: leaders([first]), timeout=10, what="the first twin to lead")
    second = start_replica(settings)
    assert second.process.wait(timeout=30) == 1
    assert "another replica with id twin is running" in second.log()
    # The refused twin leaves the first one's registration and session alone.
    assert leaders([first]) == [first]
    assert len(sessions_of(consul.url, "twin")) == 1


def test_default_replica_ids_differ_on_one_host(start_replica):
    first, second = start_replica(), start_replica()
    assert replica_id(first) != replica_id(second)
    assert replica_id(first).startswith(f"{os.uname().nodename}-{first.port}-")
