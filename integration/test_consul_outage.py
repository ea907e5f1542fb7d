"""The API while Consul is stopped, frozen and restarted under a running replica."""

import signal
import time

import pytest

from genisys.devconsul import DevConsul
from genisys.model import PLACEMENT_DEFAULTS
from tests.support import Replica, unique_prefix, wait_until

LOCAL = {"name": "local", "connector": "http://localhost:7051"}
SHOWN = {**LOCAL, **PLACEMENT_DEFAULTS}  # GET shows every placement field


@pytest.fixture
def own_consul(tmp_path):
    """An agent of this test's own, with its data on disk so that it survives a restart."""
    agent = DevConsul(data_dir=str(tmp_path / "consul-data")).start()
    yield agent
    agent.stop()


@pytest.fixture
def replica(own_consul):
    replica = Replica(own_consul.address, unique_prefix()).start()
    yield replica
    replica.stop()


def timed(replica, method, path, body=None):
    started = time.monotonic()
    response = replica.request(method, path, body)
    return response, time.monotonic() - started


def test_consul_stopped_then_restarted(own_consul, replica):
    assert replica.request("POST", "/compute", LOCAL).status_code == 201
    own_consul.stop()

    health, _ = timed(replica, "GET", "/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert "unreachable" in health.json()["error"]
    for method, path, body in [("GET", "/compute", None), ("GET", "/compute/local", None),
                               ("POST", "/compute", {"name": "other", "connector": "http://h:1"}),
                               ("PUT", "/compute/local", {"connector": "http://h:1"}),
                               ("DELETE", "/compute/local", None)]:
        response, elapsed = timed(replica, method, path, body)
        assert response.status_code == 503, (method, path, response.text)
        assert "Consul" in response.json()["error"]
        assert elapsed < 5, f"{method} {path} took {elapsed:.1f}s"

    own_consul.start()
    wait_until(lambda: replica.request("GET", "/health").status_code == 200, timeout=30,
               what="the replica to see Consul again")
    wait_until(lambda: replica.request("GET", "/compute").status_code == 200, timeout=10,
               what="reads to work again")
    assert replica.request("GET", "/compute").json() == {"local": SHOWN}
    assert replica.request("POST", "/compute", {"name": "after", "connector": "http://h:2"}
                           ).status_code == 201
    assert replica.request("GET", "/compute/after").status_code == 200
    assert replica.process.poll() is None


def test_a_frozen_consul_gives_503_within_the_timeout_not_a_hang(own_consul, replica):
    assert replica.request("POST", "/compute", LOCAL).status_code == 201
    own_consul.process.send_signal(signal.SIGSTOP)
    try:
        for method, path, body in [("GET", "/health", None),
                                   ("POST", "/compute", {"name": "frozen",
                                                         "connector": "http://h:3"})]:
            response, elapsed = timed(replica, method, path, body)
            assert response.status_code == 503
            assert elapsed < 5, f"{method} {path} took {elapsed:.1f}s"
    finally:
        own_consul.process.send_signal(signal.SIGCONT)
    wait_until(lambda: replica.request("GET", "/health").status_code == 200, timeout=15,
               what="recovery after Consul thaws")
    assert replica.request("GET", "/compute/local").json() == SHOWN


def test_a_replica_started_before_consul_seeds_its_computes_once_consul_answers(tmp_path):
    agent = DevConsul(data_dir=str(tmp_path / "data"))
    (tmp_path / "computes.py").write_text(
        'local = {"name": "local", "connector": "http://localhost:7051"}\n')
    replica = Replica(agent.address, unique_prefix(), compute_file=str(tmp_path / "computes.py"))
    replica.start()
    try:
        assert replica.request("GET", "/compute").status_code == 503
        agent.start()
        wait_until(lambda: replica.request("GET", "/compute/local").status_code == 200,
                   timeout=30, what="the compute file to reach Consul")
        # The log line follows the write: wait for it, the replica may be a moment behind.
        wait_until(lambda: "local -> http://localhost:7051 defined" in replica.log(),
                   timeout=10, what="the seeding log line")
    finally:
        replica.stop()
        agent.stop()


def test_a_missing_consul_never_crashes_the_replica(tmp_path):
    replica = Replica(f"127.0.0.1:{_closed_port()}", unique_prefix()).start()
    try:
        for _ in range(3):
            assert replica.request("GET", "/health").status_code == 503
        assert replica.process.poll() is None
    finally:
        assert replica.stop() == 0


def _closed_port():
    from genisys.devconsul import free_port
    return free_port()
