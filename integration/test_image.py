"""The image of Dockerfile, built and run: replicas in containers against a real Consul.

Built on a local Debian base (no registry) with the requirements from a host-built
wheelhouse (tests/dockerd.py); the containers use host networking to reach the test's
Consul agent on loopback.
"""

import time

import pytest
import requests

from genisys.devconsul import free_port
from tests.support import wait_until

pytestmark = pytest.mark.timeout(600)  # a cold first build makes the Debian base (~1 min)


@pytest.fixture
def start_container(docker_engine, consul, prefix):
    containers = []

    def start(replica_id: str, port: int):
        containers.append(docker_engine.client.containers.run(
            docker_engine.genisys_image(), detach=True, network_mode="host",
            name=f"genisys-test-{prefix.strip('/')}-{replica_id}",
            environment={
                "CONSUL_HTTP_ADDR": consul.address, "GENISYS_BIND": "127.0.0.1",
                "GENISYS_PORT": str(port), "GENISYS_LEADER_ID": replica_id,
                "GENISYS_CONSUL_KEY_PREFIX": prefix,
                "GENISYS_CONSUL_RESOURCES_KEY_PREFIX": f"{prefix}resources/",
                # A crashed leader would be replaced only after a minute: a quick
                # hand-over can only be the graceful one.
                "GENISYS_LEADER_CHECK_TTL": "60s"}))
        return containers[-1]

    yield start
    for container in containers:
        container.remove(force=True)


def answers(url: str):
    try:
        response = requests.get(url, timeout=2)
        return response if response.status_code == 200 else None
    except requests.ConnectionError:
        return None


def leader_seen_by(port: int) -> str | None:
    response = answers(f"http://127.0.0.1:{port}/leader")
    return response and response.json()["id"]


def test_the_image_serves_leads_and_hands_over_on_sigterm(docker_engine, start_container):
    ports = {"one": free_port(), "two": free_port()}
    docker_engine.genisys_image()
    started = time.monotonic()
    containers = {name: start_container(name, port) for name, port in ports.items()}
    for name, port in ports.items():
        health = wait_until(lambda: answers(f"http://127.0.0.1:{port}/health"), timeout=30,
                            what=f"replica {name}'s /health to answer 200")
        assert health.json()["replica"] == name
    docker_engine.timings["image: 2 replicas serving"] = time.monotonic() - started

    for container in containers.values():
        assert container.exec_run("id -u").output.decode().strip() == "10001"
        log = container.logs().decode()
        # No compute file in the image: no demo connector address is tried.
        assert "compute file computes.py not found" in log and "7051" not in log
    assert requests.get(f"http://127.0.0.1:{ports['one']}/compute", timeout=5).json() == {}

    leader = wait_until(lambda: leader_seen_by(ports["one"]), what="a leader")
    follower = next(name for name in ports if name != leader)
    started = time.monotonic()
    containers[leader].kill(signal="SIGTERM")
    wait_until(lambda: leader_seen_by(ports[follower]) == follower, timeout=10,
               what=f"{follower} to lead after {leader}'s SIGTERM")
    docker_engine.timings["image: hand-over after SIGTERM"] = time.monotonic() - started
    assert containers[leader].wait(timeout=30)["StatusCode"] == 0
    assert "released the leader lock" in containers[leader].logs().decode()
