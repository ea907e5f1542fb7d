"""Dockerfile, docker-compose.yml and deploy/: parsed and checked against the code.

The configuration keys it reads, the entry points it has, the Consul version the tests
run. Building and running them is integration/test_image.py and test_compose.py.
"""

import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest
import requests
import yaml

from genisys import config as config_module
from genisys.computes_file import read_definitions
from genisys.connectors.docker import DockerBackend

ROOT = Path(__file__).resolve().parent.parent
REPLICAS = ["genisys-1", "genisys-2", "genisys-3"]
CONNECTOR = "docker-connector"


def environment_variables_read() -> set[str]:
    """Every environment variable genisys/config.py applies."""
    names = {config_module.environment_variable(section.name, key.name)
             for section in fields(config_module.Config) for key in fields(section.type)}
    return names | {"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    instructions = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def instruction(name: str) -> list[str]:
    return [rest for keyword, rest in dockerfile() if keyword == name]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for rest in instruction("ENV"):
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def exec_form(text: str) -> list[str]:
    value = yaml.safe_load(text)  # a JSON array is YAML too
    assert isinstance(value, list), f"not the exec form: {text}"
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


# -- Dockerfile --------------------------------------------------------------------------

def test_dockerfile_builds_on_python_3_11_slim_unless_told_otherwise():
    assert dockerfile()[:2] == [("ARG", "BASE=python:3.11-slim"), ("FROM", "${BASE}")]


def test_dockerfile_runs_as_a_non_root_user():
    users = instruction("USER")
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_exposes_the_api_port_and_binds_every_interface():
    assert "7001" in " ".join(instruction("EXPOSE")).split()
    env = dockerfile_env()
    assert env["GENISYS_BIND"] == "0.0.0.0"
    assert env["GENISYS_PORT"] == "7001"


def test_dockerfile_env_names_only_variables_the_configuration_reads():
    read = environment_variables_read()
    genisys_vars = {k for k in dockerfile_env() if k.startswith(("GENISYS_", "CONSUL_"))}
    assert genisys_vars and genisys_vars <= read, genisys_vars - read


def test_dockerfile_healthcheck_asks_get_health_with_urllib():
    (check,) = instruction("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert "/health" in argv[2] and "urllib.request" in argv[2]
    assert "curl" not in check
    compile(argv[2], "HEALTHCHECK", "exec")  # the one-liner is valid Python


def test_dockerfile_starts_main_py_in_exec_form():
    # exec form: Python is PID 1 and receives SIGTERM itself (graceful leader hand-over)
    assert exec_form(instruction("CMD")[-1]) == ["python", "main.py"]


def test_dockerfile_copies_files_that_exist_and_installs_the_requirements():
    for rest in instruction("COPY"):
        for source in shlex.split(rest)[:-1]:
            assert (ROOT / source).exists(), source
    assert any("requirements.txt" in rest for rest in instruction("RUN"))
    ignored = (ROOT / ".dockerignore").read_text().split()
    for heavy in (".git", ".venv", ".tools"):
        assert heavy in ignored


# -- docker-compose.yml --------------------------------------------------------------

def test_compose_has_consul_three_replicas_a_load_balancer_and_the_docker_connector(compose):
    services = compose["services"]
    assert {"consul", "lb", CONNECTOR, *REPLICAS} <= set(services)


def test_compose_consul_is_a_single_server_listening_for_clients(compose):
    consul = compose["services"]["consul"]
    assert consul["image"].startswith("hashicorp/consul:")
    command = shlex.split(consul["command"]) if isinstance(consul["command"], str) \
        else consul["command"]
    assert command[0] == "agent"
    assert {"-server", "-bootstrap-expect=1", "-client=0.0.0.0"} <= set(command)
    assert "/v1/status/leader" in " ".join(consul["healthcheck"]["test"])


def test_compose_runs_the_consul_version_the_tests_run(compose, consul):
    version = requests.get(f"{consul.url}/v1/agent/self", timeout=5).json()["Config"]["Version"]
    assert compose["services"]["consul"]["image"] == f"hashicorp/consul:{version}"


def test_compose_publishes_every_port_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_compose_names_only_files_that_exist():
    for name in re.findall(r"README[\w.]*\.md", (ROOT / "docker-compose.yml").read_text()):
        assert (ROOT / name).exists(), name


def test_compose_replicas_are_identical_but_for_their_id(compose):
    services = compose["services"]
    ids = []
    for name in REPLICAS:
        replica = services[name]
        assert replica["build"] == "."
        assert "command" not in replica  # the image's CMD: python main.py
        env = replica["environment"]
        assert env["CONSUL_HTTP_ADDR"] == "consul:8500"
        assert env["GENISYS_BIND"] == "0.0.0.0"
        ids.append(env["GENISYS_LEADER_ID"])
        assert replica["depends_on"]["consul"]["condition"] == "service_healthy"
        assert "/app/genisys.yml" in " ".join(replica["volumes"])
        assert replica["stop_grace_period"]
    assert len(set(ids)) == len(REPLICAS), "replica ids must be unique"


def test_compose_env_names_only_variables_the_configuration_reads(compose):
    read = environment_variables_read()
    for name, service in compose["services"].items():
        for key in service.get("environment") or {}:
            if key.startswith(("GENISYS_", "CONSUL_HTTP_")):
                assert key in read, f"{name}: {key} is not read by genisys/config.py"


def test_compose_env_values_are_valid_configuration(compose):
    for name in REPLICAS:
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        config = config_module.build({}, environ=env)
        assert config.consul.host == "consul" and config.consul.port == 8500
        assert config.genisys.bind == "0.0.0.0" and config.genisys.port == 7001
        assert config.replica_id == name


def test_compose_publishes_port_7001_through_the_load_balancer(compose):
    lb = compose["services"]["lb"]
    assert lb["ports"] == ["127.0.0.1:${LB_PORT:-7001}:7001"]
    conf = (ROOT / lb["volumes"][0].split(":")[0]).read_text()
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.MULTILINE)
    assert sorted(servers) == [(name, "7001") for name in REPLICAS]
    assert "listen 7001;" in conf
    assert set(lb["depends_on"]) == set(REPLICAS)
    assert "/health" in " ".join(lb["healthcheck"]["test"])


def test_compose_publishes_each_replica_on_its_own_local_port(compose):
    ports = [compose["services"][name]["ports"][0] for name in REPLICAS]
    assert ports == [f"127.0.0.1:${{REPLICA_{n}_PORT:-701{n}}}:7001" for n in (1, 2, 3)]


def test_compose_runs_the_docker_connector_with_the_engine_socket(compose):
    connector = compose["services"][CONNECTOR]
    command = connector["command"]
    assert command[:3] == ["python", "-m", "genisys.connectors.docker"]
    assert command[command.index("--port") + 1] == "7051"
    assert command[command.index("--bind") + 1] == "0.0.0.0"
    assert "/var/run/docker.sock:/var/run/docker.sock" in connector["volumes"]
    assert connector["restart"] == "unless-stopped"
    state = command[command.index("--state-file") + 1]
    assert any(v.endswith(":" + state.rsplit("/", 1)[0]) for v in connector["volumes"])
    test = " ".join(connector["healthcheck"]["test"])
    assert "7051/health" in test
    compile(connector["healthcheck"]["test"][-1], "healthcheck", "exec")


def test_compose_gives_the_docker_connector_valid_services_on_the_compose_network(compose):
    connector = compose["services"][CONNECTOR]
    path = connector["command"][connector["command"].index("--service-file") + 1]
    [mount] = [v for v in connector["volumes"] if v.split(":")[1] == path]
    definitions = [DockerBackend("unix:///nonexistent.sock").validate(d)
                   for _, d in read_definitions(ROOT / mount.split(":")[0])]
    assert definitions
    network = compose["networks"]["default"]["name"]
    assert all(d["network"] == network for d in definitions)


def test_compose_computes_name_the_docker_connector_on_the_compose_network(compose):
    mounts = [v for v in compose["services"]["genisys-1"]["volumes"]
              if v.split(":")[1] == "/app/computes.py"]
    assert mounts, "the replicas need a compute file that names the docker connector"
    definitions = [d for _, d in read_definitions(ROOT / mounts[0].split(":")[0])]
    assert {"name": "docker", "connector": f"http://{CONNECTOR}:7051"} in definitions


def test_every_service_has_a_health_check(compose):
    images_with_healthcheck = {"genisys:latest"}  # the Dockerfile's HEALTHCHECK
    for name, service in compose["services"].items():
        assert "healthcheck" in service or service.get("image") in images_with_healthcheck \
            or service.get("build"), name


def test_compose_replicas_take_the_bootstrap_token_from_the_environment(compose):
    for name in REPLICAS:  # never a literal token in the file; up refuses without one
        token = compose["services"][name]["environment"]["GENISYS_BOOTSTRAP_TOKEN"]
        assert token.startswith("${GENISYS_BOOTSTRAP_TOKEN:?")
