"""docker-compose.yml, run: the shipped stack up, healthy, scaling, failing over, down.

The shipped file is used as it is, with an override for what this machine cannot do:
images made locally from Debian packages (no registry), the Genisys image built from a
wheelhouse, the test engine's socket, a network name of its own; free host ports come
from the variables the file reads. The commands are those of README.md's walkthrough,
run with Debian's docker-compose (1.29).
"""

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from genisys.devconsul import free_port
from tests.dockerd import genisys_build_args, serve_directory, wheelhouse
from tests.support import ROOT, wait_until

pytestmark = [pytest.mark.timeout(600)]

REPLICAS = ["genisys-1", "genisys-2", "genisys-3"]
BOOTSTRAP = "compose-test-" + uuid.uuid4().hex  # as the README's .env gives it
ADMIN = {"Authorization": f"Bearer {BOOTSTRAP}"}


class Compose:
    """docker-compose on the shipped file plus an override, as project `name`."""

    def __init__(self, engine, directory: Path):
        self.engine = engine
        self.name = f"genisys-test-{uuid.uuid4().hex[:8]}"
        self.network = self.name
        self.ports = {"LB_PORT": free_port(), "CONSUL_PORT": free_port(),
                      "CONNECTOR_PORT": free_port(),
                      **{f"REPLICA_{n}_PORT": free_port() for n in (1, 2, 3)}}
        self.override = directory / "docker-compose.override.yml"
        self.services_file = directory / "services.py"
        self.services_file.write_text(
            f'web = {{"name": "web", "image": "{engine.image("busybox")}", '
            '"command": ["sh", "-c", "trap exit TERM; sleep 600 & wait"], '
            f'"network": "{self.network}", "pull": "never"}}\n')

    def write_override(self, wheels_url: str) -> None:
        socket = self.engine.url.removeprefix("unix://")
        assert socket != self.engine.url, "the compose test needs an engine on a unix socket"
        build = {"context": str(ROOT), "network": "host",
                 "args": genisys_build_args(self.engine.image("base"), wheels_url)}
        services = {name: {"build": build} for name in REPLICAS}
        services["consul"] = {"image": self.engine.image("consul")}
        services["lb"] = {"image": self.engine.image("nginx")}
        services["docker-connector"] = {"build": build, "volumes": [
            f"{socket}:/var/run/docker.sock", f"{self.services_file}:/app/services.py:ro"]}
        self.override.write_text(yaml.safe_dump({
            "services": services, "networks": {"default": {"name": self.network}}}))

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "-f", str(self.override),
             "-p", self.name, *args], cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "DOCKER_HOST": self.engine.url,
                 "GENISYS_BOOTSTRAP_TOKEN": BOOTSTRAP,
                 **{key: str(port) for key, port in self.ports.items()}})
        assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def containers(self):
        return self.engine.containers(f"com.docker.compose.project={self.name}")

    def url(self, key: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[key]}{path}"


def get(url: str, headers=None):
    try:
        # a stopped replica costs the load balancer its connect timeout (1 s) once
        return requests.get(url, timeout=5, headers=headers)
    except (requests.ConnectionError, requests.Timeout):
        return None


def all_healthy(compose) -> bool:
    containers = compose.containers()
    states = {c.name: c.attrs["State"].get("Health", {}).get("Status") for c in containers}
    return len(states) == 6 and set(states.values()) == {"healthy"}


def leader(compose) -> str | None:
    response = get(compose.url("LB_PORT", "/leader"), ADMIN)
    return response.json()["id"] if response is not None and response.status_code == 200 \
        else None


def web_containers(engine, running_only=True):
    return engine.containers("genisys.service=web", running_only)


def mounts() -> set[str]:
    """What is mounted, but the engine's own network namespace (unmounted when it stops)."""
    return {mount for line in Path("/proc/self/mounts").read_text().splitlines()
            if not (mount := line.split()[1]).endswith("/netns/default")}


@pytest.mark.skipif(shutil.which("docker-compose") is None and not os.environ.get("CI"),
                    reason="docker-compose is not installed (scripts/install-docker.sh)")
def test_the_compose_stack_runs_scales_fails_over_and_leaves_nothing(docker_engine, tmp_path):
    compose = Compose(docker_engine, tmp_path)
    mounts_before = mounts()
    with serve_directory(wheelhouse()) as wheels_url:
        compose.write_override(wheels_url)
        try:
            started = time.monotonic()
            compose("up", "-d", "--build")
            docker_engine.timings["compose up"] = time.monotonic() - started
            wait_until(lambda: all_healthy(compose), timeout=120,
                       what="every service of the stack to be healthy")
            docker_engine.timings["compose healthy"] = time.monotonic() - started
            assert get(compose.url("LB_PORT", "/health")).status_code == 200
            for n in (1, 2, 3):
                assert get(compose.url(f"REPLICA_{n}_PORT", "/health")).status_code == 200

            # web is defined by the connector's service file; the leader scales it
            assert list(get(compose.url("CONNECTOR_PORT", "/service")).json()) == ["web"]
            started = time.monotonic()
            refused = requests.post(compose.url("LB_PORT", "/service/web/scale"),
                                    json={"number": 2}, timeout=5)
            assert refused.status_code == 401, refused.text  # the API asks for a token
            response = requests.post(compose.url("LB_PORT", "/service/web/scale"),
                                     json={"number": 2}, timeout=5, headers=ADMIN)
            assert response.status_code == 202, response.text
            wait_until(lambda: len(web_containers(docker_engine)) == 2, timeout=60,
                       what="two web containers")
            docker_engine.timings["compose: 2 containers after the order"] = \
                time.monotonic() - started
            assert sorted(c.name for c in web_containers(docker_engine)) == [
                "genisys-web-1", "genisys-web-2"]

            old = wait_until(lambda: leader(compose), timeout=30, what="a leader")
            started = time.monotonic()
            compose("stop", old)
            docker_engine.timings["compose stop"] = time.monotonic() - started
            wait_until(lambda: leader(compose) not in (None, old), timeout=30,
                       what=f"another replica than {old} to lead")
            docker_engine.timings["compose: a new leader after the stop"] = \
                time.monotonic() - started

            requests.post(compose.url("LB_PORT", "/service/web/scale"), json={"number": 0},
                          timeout=5, headers=ADMIN).raise_for_status()
            wait_until(lambda: web_containers(docker_engine, running_only=False) == [],
                       timeout=60, what="the web containers to be removed")
        finally:
            for container in web_containers(docker_engine, running_only=False):
                container.remove(force=True)
            started = time.monotonic()
            compose("down", "--volumes")
            docker_engine.timings["compose down"] = time.monotonic() - started
    assert compose.containers() == []
    assert docker_engine.client.networks.list(names=[compose.network]) == []
    assert [v for v in docker_engine.client.volumes.list()
            if v.name.startswith(compose.name.replace("-", ""))] == []
    assert mounts() - mounts_before == set()
