"""The Docker connector: validation and the protocol, and scaling against a real engine.

The engine is the `docker_engine` fixture (tests/dockerd.py): DOCKER_HOST's, else a private
dockerd without a default bridge, so containers here use host networking (or a network
a test creates). The image is busybox, made from Debian's busybox-static.
"""

import signal
import urllib.request

import pytest

from genisys.connectors.docker import INSTANCE_LABEL, SERVICE_LABEL, DockerBackend
from genisys.model import ValidationError
from tests.connector_helpers import ConnectorProcess, unique, wait_until

pytestmark = pytest.mark.timeout(120)


def test_a_full_definition_is_normalized():
    backend = DockerBackend("unix:///nonexistent.sock")
    assert backend.validate({
        "name": "web", "image": "nginx:1.27", "command": "nginx -g 'daemon off;'",
        "environment": {"MODE": "prod"}, "ports": [80, "443", "53/udp"],
    }) == {"name": "web", "image": "nginx:1.27", "command": ["nginx", "-g", "daemon off;"],
           "environment": {"MODE": "prod"}, "ports": ["80/tcp", "443/tcp", "53/udp"],
           "pull": "missing"}
    assert backend.validate({"name": "db", "image": "registry.example.com:5000/team/db@sha256:ab"}
                            ) == {"name": "db", "image": "registry.example.com:5000/team/db@sha256:ab",
                                  "environment": {}, "ports": [], "pull": "missing"}
    assert backend.validate({"name": "db", "image": "db", "network": "host", "pull": "never"}
                            ) == {"name": "db", "image": "db", "environment": {}, "ports": [],
                                  "network": "host", "pull": "never"}


BAD_DEFINITIONS = [
    ({"image": "nginx"}, "missing field 'name'"),
    ({"name": "web"}, "missing field 'image'"),
    ({"name": "web", "image": "nginx", "cwd": "/"}, "unknown field 'cwd'"),
    ({"name": "a/b", "image": "nginx"}, "invalid"),
    ({"name": "web", "image": ""}, "image reference"),
    ({"name": "web", "image": "nginx latest"}, "image reference"),
    ({"name": "web", "image": 5}, "image reference"),
    ({"name": "web", "image": "nginx", "command": []}, "non-empty list"),
    ({"name": "web", "image": "nginx", "command": [1]}, "non-empty list"),
    ({"name": "web", "image": "nginx", "environment": ["A=1"]}, "environment must be an object"),
    ({"name": "web", "image": "nginx", "environment": {"A": None}}, "must be a string"),
    ({"name": "web", "image": "nginx", "ports": 80}, "ports must be a list"),
    ({"name": "web", "image": "nginx", "ports": [0]}, "from 1 to 65535"),
    ({"name": "web", "image": "nginx", "ports": [65536]}, "from 1 to 65535"),
    ({"name": "web", "image": "nginx", "ports": ["80/icmp"]}, "from 1 to 65535"),
    ({"name": "web", "image": "nginx", "ports": [True]}, "from 1 to 65535"),
    ({"name": "web", "image": "nginx", "network": ""}, "network must be host, none"),
    ({"name": "web", "image": "nginx", "network": "a b"}, "network must be host, none"),
    ({"name": "web", "image": "nginx", "network": "host", "ports": [80]},
     "ports cannot be published with network 'host'"),
    ({"name": "web", "image": "nginx", "pull": "sometimes"}, "pull must be one of never"),
]


@pytest.mark.parametrize("definition,words", BAD_DEFINITIONS,
                         ids=[words for _, words in BAD_DEFINITIONS])
def test_bad_definitions_are_refused(definition, words):
    with pytest.raises(ValidationError, match=words.replace("/", ".")):
        DockerBackend("unix:///nonexistent.sock").validate(definition)


def test_without_an_engine_definitions_work_and_orders_get_a_clear_503(tmp_path):
    url = f"unix://{tmp_path}/no-engine.sock"
    with ConnectorProcess("genisys.connectors.docker", "--docker-url", url,
                          log_path=tmp_path / "docker.log") as connector:
        assert connector.call("GET", "/health") == (200, {"status": "ok", "backend": "docker"})
        assert connector.call("POST", "/service", {"name": "web", "image": "nginx"})[0] == 201
        assert connector.call("POST", "/service", {"name": "web", "image": "nginx x"})[0] == 400
        no_engine = {"error": f"no Docker engine answers at {url}."}
        assert connector.call("POST", "/service/web/scale", {"number": 1}) == (503, no_engine)
        assert connector.call("GET", "/service/web/status") == (503, no_engine)
        assert connector.call("GET", "/status") == (503, no_engine)
        assert connector.call("GET", "/service/nope/status")[0] == 404
        assert connector.stop() == 0


# --- against a real engine ----------------------------------------------------------

@pytest.fixture
def busybox(docker_engine):
    return docker_engine.image("busybox")


@pytest.fixture
def start_connector(docker_engine, tmp_path):
    """Start Docker connectors on the test engine; each is stopped at the end."""
    connectors = []

    def start(*args):
        log_path = tmp_path / f"docker-{len(connectors) + 1}.log"
        connectors.append(ConnectorProcess("genisys.connectors.docker", "--docker-url",
                                           docker_engine.url, *args, log_path=log_path))
        return connectors[-1]

    yield start
    for connector in connectors:
        connector.__exit__()


@pytest.fixture
def service(docker_engine):
    name = unique("test")
    yield name
    for container in containers_of(docker_engine, name):
        container.remove(force=True)


def containers_of(engine, name: str, running_only: bool = False):
    return engine.containers(f"{SERVICE_LABEL}={name}", running_only)


def define_and_scale(connector, name, number, image, **extra):
    definition = {"name": name, "image": image, "command": "sleep 600", "network": "host",
                  **extra}
    assert connector.call("PUT", f"/service/{name}", definition)[0] in (200, 201)
    return connector.call("POST", f"/service/{name}/scale", {"number": number})


def test_containers_scale_0_2_1_0_with_names_labels_and_environment(
        docker_engine, start_connector, service, busybox):
    connector = start_connector("--grace", "1")
    assert define_and_scale(connector, service, 2, busybox) == (
        200, {"service": service, "running_resources": 2})
    containers = containers_of(docker_engine, service, running_only=True)
    assert sorted(c.name for c in containers) == [f"genisys-{service}-1", f"genisys-{service}-2"]
    assert sorted(c.labels[INSTANCE_LABEL] for c in containers) == ["1", "2"]
    assert f"GENISYS_SERVICE={service}" in containers[0].attrs["Config"]["Env"]
    assert connector.call("POST", f"/service/{service}/scale", {"number": 1})[1] == {
        "service": service, "running_resources": 1}
    # the newest is stopped in the background; the oldest stays
    wait_until(lambda: [c.name for c in containers_of(docker_engine, service)] == [
        f"genisys-{service}-1"], timeout=30, what="the newest container to be removed")
    assert connector.call("POST", f"/service/{service}/scale", {"number": 0})[0] == 200
    wait_until(lambda: containers_of(docker_engine, service) == [], timeout=30,
               what="every container to be removed")


def test_a_killed_container_no_longer_counts_and_is_replaced(
        docker_engine, start_connector, service, busybox):
    connector = start_connector("--grace", "1")
    define_and_scale(connector, service, 2, busybox)
    containers_of(docker_engine, service, running_only=True)[0].kill()
    wait_until(lambda: connector.call("GET", f"/service/{service}/status")[1] == {
        "running_resources": 1}, what="the status to drop to 1")
    assert define_and_scale(connector, service, 2, busybox)[1]["running_resources"] == 2
    assert len(containers_of(docker_engine, service)) == 2  # the exited one was removed


def test_a_scale_down_answers_before_the_grace_period_and_stops_in_the_background(
        docker_engine, start_connector, service, busybox):
    # PID 1 of a container ignores SIGTERM: only the kill after the grace period stops it.
    connector = start_connector("--grace", "5")
    define_and_scale(connector, service, 1, busybox)
    [container] = containers_of(docker_engine, service)
    assert connector.call("POST", f"/service/{service}/scale", {"number": 0})[1] == {
        "service": service, "running_resources": 0}
    container.reload()
    assert container.status == "running"  # answered while the stop goes on
    assert connector.call("GET", f"/service/{service}/status")[1] == {"running_resources": 0}
    assert "stopping 1 container(s) in the background (grace 5 s)" in connector.log()
    wait_until(lambda: containers_of(docker_engine, service) == [], timeout=30,
               what="the container to be killed and removed after its grace period")


def test_published_ports_serve_on_the_host_port_the_engine_picked(
        docker_engine, start_connector, service, busybox):
    network = docker_engine.client.networks.create(unique("genisys-test"), driver="bridge")
    try:
        connector = start_connector("--grace", "1")
        command = ["sh", "-c", "echo $GENISYS_INSTANCE > /tmp/index.html && "
                   "exec httpd -f -p 8080 -h /tmp"]
        assert define_and_scale(connector, service, 2, busybox, command=command,
                                network=network.name, ports=[8080])[0] == 200
        answers = set()
        for container in containers_of(docker_engine, service, running_only=True):
            [binding] = [b for b in container.ports["8080/tcp"] if "." in b["HostIp"]]
            url = f"http://127.0.0.1:{binding['HostPort']}/"
            answers.add(wait_until(lambda: _text(url), what=f"{url} to answer"))
        assert answers == {"1\n", "2\n"}
    finally:
        for container in containers_of(docker_engine, service):
            container.remove(force=True)
        network.remove()


def _text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_ports_without_a_network_on_an_engine_without_bridge_get_one_sentence(
        docker_engine, start_connector, service, busybox):
    if docker_engine.client.networks.list(filters={"name": "^bridge$"}):
        pytest.skip("this engine has a default bridge")  # never for the private engine
    connector = start_connector()
    connector.call("PUT", f"/service/{service}", {"name": service, "image": busybox,
                                                   "command": "sleep 600", "ports": [80]})
    assert connector.call("POST", f"/service/{service}/scale", {"number": 1}) == (503, {
        "error": "ports cannot be published: the Docker engine has no default bridge "
                 "network, so set \"network\" to one of its networks."})
    assert containers_of(docker_engine, service) == []


def test_a_missing_image_is_named_with_whether_a_pull_was_tried(
        start_connector, service, busybox):
    connector = start_connector()
    image = "genisys-test/no-such-image:never"
    assert define_and_scale(connector, service, 1, image, pull="never") == (503, {
        "error": f"image '{image}' is not on the Docker engine and pull is 'never', "
                 "so it was not pulled."})
    status, body = define_and_scale(connector, service, 1, image)  # pull: missing
    assert status == 503 and body["error"].startswith(f"image '{image}' could not be pulled: ")
    assert body["error"].count(". ") == 0 and body["error"].endswith(".")
    # always: even an image on the engine is pulled, and here no registry answers
    status, body = define_and_scale(connector, service, 1, busybox, pull="always")
    assert status == 503 and body["error"].startswith(f"image '{busybox}' could not be pulled")
    assert define_and_scale(connector, service, 1, busybox, pull="never")[0] == 200


def test_definitions_and_containers_survive_a_killed_connector_without_duplicates(
        docker_engine, start_connector, service, busybox, tmp_path):
    state = str(tmp_path / "state.json")
    first = start_connector("--state-file", state)
    define_and_scale(first, service, 2, busybox)
    before = sorted(c.id for c in containers_of(docker_engine, service))
    first.stop(signal.SIGKILL)

    second = start_connector("--state-file", state)  # nothing POSTed again
    assert second.call("GET", f"/service/{service}")[1]["image"] == busybox
    assert second.call("GET", f"/service/{service}/status")[1] == {"running_resources": 2}
    assert second.call("POST", f"/service/{service}/scale", {"number": 2})[1][
        "running_resources"] == 2
    assert sorted(c.id for c in containers_of(docker_engine, service)) == before  # adopted
    assert second.call("POST", f"/service/{service}/scale", {"number": 3})[0] == 200
    assert sorted(c.name for c in containers_of(docker_engine, service)) == [
        f"genisys-{service}-{n}" for n in (1, 2, 3)]
