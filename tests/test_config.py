"""genisys.yml loading and validation (pure), and how main.py reports a bad file."""

import subprocess
import sys

import pytest

from genisys import config
from tests.support import ROOT


def test_defaults_without_a_file():
    loaded = config.load(None, environ={})
    assert loaded.genisys.port == 7001
    assert loaded.genisys.bind == "127.0.0.1"
    assert loaded.consul.key_prefix == "genisys/"
    assert loaded.consul.resources_key_prefix == "skynet/resources/"
    assert loaded.connector.poll_interval == 15.0
    assert loaded.placement.strategy == "first"


def test_the_shipped_file_loads():
    loaded = config.load(str(ROOT / "genisys.yml"), environ={})
    assert loaded.genisys.compute_file == "computes.py"
    assert loaded.connector.poll_interval == 15.0


@pytest.mark.parametrize("text,seconds", [("15s", 15), ("500ms", 0.5), ("2m", 120), ("1h", 3600),
                                          (3, 3), ("1.5s", 1.5), ("7", 7)])
def test_durations(text, seconds):
    assert config.parse_duration(text) == seconds


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "genisys.yml"
    path.write_text("consul: {host: file-host, port: 8501}\ngenisys: {port: 7001}\n")
    loaded = config.load(str(path), environ={
        "CONSUL_HTTP_ADDR": "https://consul.example:8443", "CONSUL_HTTP_TOKEN": "secret",
        "GENISYS_PORT": "7002", "GENISYS_CONNECTOR_POLL_INTERVAL": "2s"})
    assert (loaded.consul.host, loaded.consul.port, loaded.consul.scheme) == \
        ("consul.example", 8443, "https")
    assert loaded.consul.token == "secret"
    assert loaded.genisys.port == 7002
    assert loaded.connector.poll_interval == 2.0


def test_consul_http_addr_without_a_scheme():
    loaded = config.build({}, environ={"CONSUL_HTTP_ADDR": "10.1.2.3:8600"})
    assert (loaded.consul.host, loaded.consul.port, loaded.consul.scheme) == \
        ("10.1.2.3", 8600, "http")


BAD = [
    ({"nope": {}}, "unknown section 'nope'"),
    ({"genisys": {"colour": 1}}, "unknown key genisys.colour"),
    ({"genisys": {"port": "seventy"}}, "genisys.port: 'seventy' is not a port number"),
    ({"genisys": {"port": 70000}}, "genisys.port: 70000 is not a port number"),
    ({"genisys": {"port": 0}}, "genisys.port: 0 is not a port number"),
    ({"consul": {"port": True}}, "consul.port: True is not a port number"),
    ({"connector": {"poll_interval": "15 parsecs"}}, "connector.poll_interval: '15 parsecs' is not a duration"),
    ({"connector": {"timeout": "-1s"}}, "connector.timeout: '-1s' is not a duration"),
    ({"connector": {"poll_interval": "0s"}}, "must be > 0"),
    ({"connector": {"concurrency": 0}}, "connector.concurrency must be at least 1"),
    ({"genisys": {"bind": ["a"]}}, "genisys.bind: ['a'] is not a string"),
    ({"genisys": "7001"}, "genisys must be a mapping"),
    ({"placement": {"strategy": "random"}}, "placement.strategy: 'random' is not one of"),
    ({"consul": {"key_prefix": "genisys"}}, "consul.key_prefix: 'genisys' must end with '/'"),
    ({"leader": {"check_ttl": "500ms"}}, "leader.check_ttl must be at least 1s"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m for _, m in BAD])
def test_invalid_configuration_names_the_key(raw, message):
    with pytest.raises(config.ConfigError) as error:
        config.build(raw, environ={}, source="genisys.yml")
    assert message in str(error.value)


def test_invalid_environment_value_names_the_key():
    with pytest.raises(config.ConfigError, match="genisys.port: 'x' is not a port number"):
        config.build({}, environ={"GENISYS_PORT": "x"})


def run_main(tmp_path, text):
    path = tmp_path / "genisys.yml"
    path.write_text(text)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "--config", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)


@pytest.mark.parametrize("text,message", [
    ("genisys: {port: 99999}\n", "genisys.port: 99999 is not a port number (1-65535)"),
    ("connector: {poll_interval: 15 parsecs}\n", "connector.poll_interval: '15 parsecs' is not a duration"),
    ("consul: {hots: x}\n", "unknown key consul.hots"),
    ("extra: {}\n", "unknown section 'extra'"),
    ("genisys: [\n", "not valid YAML"),
])
def test_main_exits_2_with_one_line_naming_the_key(tmp_path, text, message):
    result = run_main(tmp_path, text)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_main_refuses_a_compute_file_that_is_not_only_definitions(tmp_path):
    (tmp_path / "computes.py").write_text(
        'local = {"name": "local", "connector": "http://localhost:7051"}\nimport os\n')
    result = run_main(tmp_path, "genisys: {compute_file: computes.py}\n")
    assert result.returncode == 2
    assert "computes.py:2: only assignments like `name = {...}` are allowed here" in result.stderr


def test_main_refuses_an_invalid_compute_definition(tmp_path):
    (tmp_path / "computes.py").write_text('bad = {"name": "a b", "connector": "http://h:1"}\n')
    result = run_main(tmp_path, "genisys: {compute_file: computes.py}\n")
    assert result.returncode == 2
    assert "computes.py:1: name 'a b' is invalid" in result.stderr
