"""Connector authentication (issue 11, part 3): a compute's token, sent by Genisys as
`Authorization: Bearer`, required by the kit and so by both reference connectors."""

import http.client

import pytest

from genisys.model import PLACEMENT_DEFAULTS, Compute, ValidationError
from tests.connector_helpers import DEMO_COMMAND, ConnectorProcess, processes_of, unique
from tests.support import wait_until

TOKEN = "s3cr3t-connector-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(tmp_path):
    """A process connector that requires TOKEN (from --token-file)."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with ConnectorProcess("genisys.connectors.process", "--token-file", str(token_file),
                          "--log-dir", str(tmp_path / "logs"),
                          log_path=tmp_path / "connector.log") as connector:
        yield connector


def define_demo(connector, name: str) -> None:
    status, _ = connector.call("POST", "/service", {"name": name, "command": DEMO_COMMAND},
                               headers=BEARER)
    assert status == 201


# --- the model: a write-only field ---------------------------------------------------

def test_a_token_is_stored_but_never_shown_nor_logged():
    compute = Compute.from_dict({"name": "a", "connector": "http://h:1", "token": TOKEN})
    assert compute.to_dict()["token"] == TOKEN  # the stored form: every leader needs it
    assert Compute.from_stored(compute.to_dict()) == compute
    assert compute.public_dict() == {"name": "a", "connector": "http://h:1", "token": "set",
                                     **PLACEMENT_DEFAULTS}
    assert TOKEN not in repr(compute)
    plain = Compute.from_dict({"name": "a", "connector": "http://h:1"})
    assert "token" not in plain.public_dict()


@pytest.mark.parametrize("token", ["", "two words", 42, None, "x" * 4097, "caf\u00e9"])
def test_a_token_that_cannot_go_in_a_header_is_refused(token):
    with pytest.raises(ValidationError, match="token must be a string of 1 to 4096"):
        Compute.from_dict({"name": "a", "connector": "http://h:1", "token": token})


# --- the kit: 401 without the token --------------------------------------------------

@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}x"}])
def test_every_endpoint_but_health_answers_401_without_the_token(guarded, headers):
    assert guarded.call("GET", "/health", headers=headers)[0] == 200
    for method, path, body in [("GET", "/status", None), ("GET", "/service", None),
                               ("POST", "/service", {"name": "x", "command": ["true"]}),
                               ("GET", "/service/x/status", None),
                               ("POST", "/service/x/scale", {"number": 1}),
                               ("GET", "/nowhere", None)]:
        status, answer = guarded.call(method, path, body, headers=headers)
        assert (status, answer) == (401, {"error": "this connector requires a token: send "
                                          "Authorization: Bearer <token>, the compute's token."})
    assert guarded.call("GET", "/service", headers=BEARER) == (200, {})  # nothing defined


def test_401_names_the_bearer_scheme(guarded):
    connection = http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=10)
    connection.request("GET", "/status")
    response = connection.getresponse()
    assert response.status == 401
    assert response.getheader("WWW-Authenticate").startswith("Bearer")
    connection.close()


def test_a_stray_client_can_neither_scale_nor_move_the_fencing_term(guarded):
    name = unique("auth")
    define_demo(guarded, name)
    stray = guarded.call("POST", f"/service/{name}/scale", {"number": 2},
                         headers={"X-Genisys-Term": str(2**62)})
    assert stray[0] == 401
    assert processes_of(name) == {}
    # The fence did not move: the leader's own term 1 is still accepted.
    leader = guarded.call("POST", f"/service/{name}/scale", {"number": 1},
                          headers={**BEARER, "X-Genisys-Term": "1"})
    assert leader == (200, {"service": name, "running_resources": 1})
    assert guarded.call("POST", f"/service/{name}/scale", {"number": 0}, headers=BEARER)[0] == 200


def test_the_token_can_come_from_the_environment_and_instances_do_not_inherit_it(
        tmp_path, monkeypatch):
    monkeypatch.setenv("GENISYS_CONNECTOR_TOKEN", TOKEN)
    with ConnectorProcess("genisys.connectors.process", "--log-dir", str(tmp_path / "logs"),
                          log_path=tmp_path / "connector.log") as connector:
        assert connector.call("GET", "/status")[0] == 401
        name = unique("auth-env")
        define_demo(connector, name)
        assert connector.call("POST", f"/service/{name}/scale", {"number": 1},
                              headers=BEARER)[0] == 200
        environments = list(processes_of(name).values())
        assert len(environments) == 1 and "GENISYS_CONNECTOR_TOKEN" not in environments[0]
        assert connector.call("POST", f"/service/{name}/scale", {"number": 0},
                              headers=BEARER)[0] == 200


def test_an_empty_token_file_stops_the_connector_at_start(tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(AssertionError, match="the token file .* is empty"):
        ConnectorProcess("genisys.connectors.process", "--token-file", str(empty),
                         log_path=tmp_path / "connector.log")


# --- Genisys sends the compute's token -----------------------------------------------

def test_genisys_scales_through_a_connector_that_requires_the_computes_token(
        start_replica, guarded):
    name = unique("auth-e2e")
    define_demo(guarded, name)
    replica = start_replica()
    body = {"name": "guarded", "connector": guarded.url, "token": TOKEN}
    created = replica.request("POST", "/compute", body)
    assert created.status_code == 201 and created.json()["token"] == "set"
    assert replica.request("GET", "/compute").json()["guarded"] == \
        {"name": "guarded", "connector": guarded.url, "token": "set", **PLACEMENT_DEFAULTS}
    assert TOKEN not in replica.request("GET", "/compute/guarded").text

    assert replica.request("POST", f"/service/{name}/scale", {"number": 2}).status_code == 202
    wait_until(lambda: replica.request("GET", f"/service/{name}").json()["observed"]
               == {"guarded": 2}, 20, "2 instances through the guarded connector")
    assert len(processes_of(name)) == 2

    # A wrong token is the compute's error, in words, and orders nothing.
    replaced = replica.request("PUT", "/compute/guarded",
                               {"connector": guarded.url, "token": "not-the-token-42"})
    assert replaced.status_code == 200
    replica.request("POST", f"/service/{name}/scale", {"number": 0})
    error = wait_until(lambda: replica.request("GET", f"/service/{name}").json()["errors"]
                       .get("guarded"), 20, "the 401 in the service's errors")
    assert "401" in error and "requires a token" in error
    assert len(processes_of(name)) == 2
    assert TOKEN not in replica.log() and "not-the-token-42" not in replica.log()

    replica.request("PUT", "/compute/guarded", {"connector": guarded.url, "token": TOKEN})
    wait_until(lambda: processes_of(name) == {}, 20, "the scale to 0 with the right token")


def test_a_retired_connector_is_drained_with_its_computes_token(start_replica, guarded):
    name = unique("auth-retired")
    define_demo(guarded, name)
    replica = start_replica({"connector": {"poll_interval": "1s"}})
    replica.request("POST", "/compute", {"name": "moving", "connector": guarded.url,
                                         "token": TOKEN})
    replica.request("POST", f"/service/{name}/scale", {"number": 2})
    wait_until(lambda: len(processes_of(name)) == 2, 20, "2 instances on the guarded connector")
    # Moving the compute retires its connector: the leader stops what runs there.
    moved = replica.request("PUT", "/compute/moving", {"connector": "http://127.0.0.1:9"})
    assert moved.status_code == 200
    wait_until(lambda: processes_of(name) == {}, 20, "the retired connector drained")
    assert "requires a token" not in guarded.log()  # every call bore the token


def test_the_docker_connector_requires_its_token_too(tmp_path):
    """Both reference connectors get the check from the kit; no engine is needed for it."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with ConnectorProcess("genisys.connectors.docker", "--token-file", str(token_file),
                          "--docker-url", f"unix://{tmp_path}/no-engine.sock",
                          log_path=tmp_path / "docker.log") as connector:
        assert connector.call("GET", "/health")[0] == 200
        assert connector.call("POST", "/service/web/scale", {"number": 1},
                              headers={"X-Genisys-Term": str(2**62)})[0] == 401
        assert connector.call("GET", "/service", headers=BEARER) == (200, {})
