"""The Docker connector: validation and the protocol always; scaling where an engine answers."""

import os

import docker
import pytest

from genisys.connectors.docker import INSTANCE_LABEL, SERVICE_LABEL, DockerBackend
from genisys.model import ValidationError
from tests.connector_helpers import ConnectorProcess, unique, wait_until

pytestmark = pytest.mark.timeout(60)

ENGINE_URL = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
IMAGE = os.environ.get("GENISYS_TEST_DOCKER_IMAGE", "busybox:1.36")


def _engine() -> docker.DockerClient | None:
    try:
        client = docker.DockerClient(base_url=ENGINE_URL, timeout=5)
        client.ping()
        return client
    except Exception:  # no socket, no engine, no permission: all mean "no engine here"
        return None


ENGINE = _engine()
needs_engine = pytest.mark.skipif(ENGINE is None,
                                  reason=f"no Docker engine answers at {ENGINE_URL}")


def test_a_full_definition_is_normalized():
    backend = DockerBackend("unix:///nonexistent.sock")
    assert backend.validate({
        "name": "web", "image": "nginx:1.27", "command": "nginx -g 'daemon off;'",
        "environment": {"MODE": "prod"}, "ports": [80, "443", "53/udp"],
    }) == {"name": "web", "image": "nginx:1.27", "command": ["nginx", "-g", "daemon off;"],
           "environment": {"MODE": "prod"}, "ports": ["80/tcp", "443/tcp", "53/udp"]}
    assert backend.validate({"name": "db", "image": "registry.example.com:5000/team/db@sha256:ab"}
                            ) == {"name": "db", "image": "registry.example.com:5000/team/db@sha256:ab",
                                  "environment": {}, "ports": []}


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
def engine_connector(tmp_path):
    with ConnectorProcess("genisys.connectors.docker", "--docker-url", ENGINE_URL,
                          "--grace", "1", log_path=tmp_path / "docker.log") as connector:
        yield connector


@pytest.fixture
def service():
    name = unique("genisys-test")
    yield name
    for container in containers_of(name):
        container.remove(force=True)


def containers_of(name: str, running_only: bool = False):
    return ENGINE.containers.list(all=not running_only,
                                  filters={"label": f"{SERVICE_LABEL}={name}"})


def define_and_scale(connector, name, number, **extra):
    definition = {"name": name, "image": IMAGE, "command": "sleep 600", **extra}
    assert connector.call("PUT", f"/service/{name}", definition)[0] in (200, 201)
    return connector.call("POST", f"/service/{name}/scale", {"number": number})


@needs_engine
@pytest.mark.timeout(300)  # the first run may pull the image
def test_containers_scale_0_2_1_0_with_labels_and_environment(engine_connector, service):
    assert define_and_scale(engine_connector, service, 2) == (
        200, {"service": service, "running_resources": 2})
    containers = containers_of(service, running_only=True)
    assert sorted(c.labels[INSTANCE_LABEL] for c in containers) == ["1", "2"]
    assert f"GENISYS_SERVICE={service}" in containers[0].attrs["Config"]["Env"]
    assert engine_connector.call("POST", f"/service/{service}/scale", {"number": 1})[1] == {
        "service": service, "running_resources": 1}
    assert [c.labels[INSTANCE_LABEL] for c in containers_of(service)] == ["1"]  # oldest stays
    assert engine_connector.call("POST", f"/service/{service}/scale", {"number": 0})[0] == 200
    assert containers_of(service) == []


@needs_engine
@pytest.mark.timeout(300)
def test_a_killed_container_no_longer_counts_and_is_replaced(engine_connector, service):
    define_and_scale(engine_connector, service, 2)
    containers_of(service, running_only=True)[0].kill()
    wait_until(lambda: engine_connector.call("GET", f"/service/{service}/status")[1] == {
        "running_resources": 1}, what="the status to drop to 1")
    assert define_and_scale(engine_connector, service, 2)[1]["running_resources"] == 2
    assert len(containers_of(service)) == 2  # the exited one was removed


@needs_engine
@pytest.mark.timeout(300)
def test_published_ports_get_a_host_port_each(engine_connector, service):
    define_and_scale(engine_connector, service, 2, ports=[8080])
    for container in containers_of(service, running_only=True):
        [binding] = container.ports["8080/tcp"]
        assert binding["HostPort"].isdigit()


@needs_engine
@pytest.mark.timeout(300)
def test_containers_outlive_the_connector_and_are_counted_again(tmp_path, service):
    for run in (1, 2):
        with ConnectorProcess("genisys.connectors.docker", "--docker-url", ENGINE_URL,
                              log_path=tmp_path / f"docker-{run}.log") as connector:
            status, body = define_and_scale(connector, service, 1)
            assert (status, body["running_resources"]) == (200, 1)
            assert connector.stop() == 0
        assert len(containers_of(service, running_only=True)) == 1


@needs_engine
@pytest.mark.timeout(120)
def test_an_image_that_does_not_exist_is_a_clear_503(engine_connector, service):
    engine_connector.call("POST", "/service", {"name": service,
                                               "image": "genisys-test/no-such-image:never"})
    status, body = engine_connector.call("POST", f"/service/{service}/scale", {"number": 1})
    assert status == 503 and body["error"].startswith("the Docker engine refused: ")
