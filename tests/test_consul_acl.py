"""Consul with ACLs enabled (default policy deny): denied requests answer 503 naming the
missing permission and change nothing, /health says what is denied, and the README's
minimal policy is enough to define computes, scale services and lead."""

import json
import re
import uuid

import pytest
import requests

from genisys.devconsul import DevConsul
from genisys.store import _denials, _kv, denied_key
from tests.connector_helpers import ConnectorProcess
from tests.support import ROOT, Replica, wait_until

MASTER = str(uuid.uuid4())


@pytest.fixture(scope="module")
def acl_consul():
    agent = DevConsul(acl_master_token=MASTER).start()
    yield agent
    agent.stop()


def master(agent, method: str, path: str, body=None):
    """A request with the master token (what an operator does); its JSON answer."""
    response = requests.request(method, f"http://{agent.address}/v1/{path}", timeout=5,
                                data=body if isinstance(body, str) else json.dumps(body),
                                headers={"X-Consul-Token": MASTER})
    assert response.status_code == 200, response.text
    return response.json()


def kv(agent, key: str) -> bytes | None:
    response = requests.get(f"http://{agent.address}/v1/kv/{key}?raw", timeout=5,
                            headers={"X-Consul-Token": MASTER})
    return None if response.status_code == 404 else response.content


def policy(agent, rules: str) -> str:
    return master(agent, "PUT", "acl/policy",
                  {"Name": f"test-{uuid.uuid4().hex[:10]}", "Rules": rules})["ID"]


def token(agent, rules: str) -> tuple[str, str]:
    """A new token with a policy of `rules`: (SecretID, AccessorID)."""
    created = master(agent, "PUT", "acl/token", {"Policies": [{"ID": policy(agent, rules)}]})
    return created["SecretID"], created["AccessorID"]


def readme_policy(prefix: str) -> str:
    """The README's minimal policy, for this test's key prefixes."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Consul ACLs"):]
    rules = re.search(r"```hcl\n(.*?)```", section, re.S).group(1)
    return rules.replace('"genisys/"', f'"{prefix}"').replace(
        '"skynet/resources/"', f'"{prefix}resources/"')


@pytest.fixture
def start(acl_consul, prefix):
    """Start replicas against the ACL agent with a token (None: anonymous)."""
    replicas = []

    def start_with(secret: str | None, settings=None, compute_file=None):
        replica = Replica(acl_consul.address, prefix, settings, compute_file,
                          env={"CONSUL_HTTP_TOKEN": secret} if secret else None)
        replicas.append(replica)
        return replica.start()

    yield start_with
    for replica in replicas:
        replica.stop()


def define(agent, prefix: str, name: str) -> None:
    master(agent, "PUT", f"kv/{prefix}computes/{name}",
           json.dumps({"name": name, "connector": "http://127.0.0.1:7051"}))


def denied(prefix: str, key: str, access: str, rule_prefix: str | None = None) -> str:
    return (f"Consul denied key {access} on {prefix}{key}: the token needs key_prefix "
            f'"{rule_prefix or prefix}" {access}.')


def read_only(prefix: str) -> str:
    return f'key_prefix "{prefix}" {{ policy = "read" }}'


def test_without_a_token_defining_a_compute_is_503_naming_the_permission(acl_consul, start,
                                                                          prefix):
    replica = start(None)
    response = replica.request("POST", "/compute",
                               {"name": "x", "connector": "http://127.0.0.1:7051"})
    assert (response.status_code, response.json()) == (
        503, {"error": denied(prefix, "computes/x", "write")})
    assert kv(acl_consul, f"{prefix}computes/x") is None


def test_an_unknown_token_is_named_as_such(acl_consul, start, prefix):
    replica = start(str(uuid.uuid4()))
    unknown = ("Consul does not know the configured ACL token: check consul.token or "
               "CONSUL_HTTP_TOKEN.")
    for method, path, body in [("GET", "/compute", None), ("GET", "/compute/c", None),
                               ("POST", "/compute", {"name": "x", "connector": "http://h:1"})]:
        response = replica.request(method, path, body)
        assert (response.status_code, response.json()) == (503, {"error": unknown}), path
    # Said once, not once per prefix and permission; the election cannot register either.
    wait_until(lambda: [t[:40] for t in replica.request("GET", "/health").json()["troubles"]]
               == [unknown[:40], "this replica is not registered in Consul"],
               what="health naming the unknown token")


def test_denied_reads_are_503_never_an_empty_registry(acl_consul, start, prefix):
    define(acl_consul, prefix, "c")
    replica = start(None)
    for path, key in [("/compute", "computes/"), ("/compute?consistent=1", "computes/"),
                      ("/compute/c", "computes/c")]:
        response = replica.request("GET", path)
        assert (response.status_code, response.json()) == (
            503, {"error": denied(prefix, key, "read")}), path
    # The views are never synced: reads served from them say what is denied too.
    response = replica.request("GET", "/service")
    assert response.status_code == 503
    assert response.json()["error"].startswith("Consul denied key read on ")


def test_a_read_only_token_reads_and_each_write_is_503_naming_the_permission(acl_consul, start,
                                                                              prefix):
    define(acl_consul, prefix, "c")
    replica = start(token(acl_consul, read_only(prefix))[0])
    wait_until(lambda: replica.request("GET", "/compute").json().get("c"), what="compute c")
    for method, path, body, key in [
            ("POST", "/compute", {"name": "y", "connector": "http://127.0.0.1:7052"},
             "computes/y"),
            ("PUT", "/compute/c", {"connector": "http://127.0.0.1:7053"}, "computes/c"),
            ("DELETE", "/compute/c", None, "computes/c")]:
        response = replica.request(method, path, body)
        assert (response.status_code, response.json()) == (
            503, {"error": denied(prefix, key, "write")}), (method, path)
    # Not "too many concurrent changes" after 20 attempts: the first refusal answers.
    response = replica.request("POST", "/service/web/scale", {"number": 1})
    assert (response.status_code, response.json()) == (
        503, {"error": denied(prefix, "resources/web", "write", f"{prefix}resources/")})
    assert kv(acl_consul, f"{prefix}computes/y") is None
    assert kv(acl_consul, f"{prefix}resources/web") is None
    assert json.loads(kv(acl_consul, f"{prefix}computes/c"))["connector"] == \
        "http://127.0.0.1:7051"


def test_the_compute_file_is_not_called_already_defined_when_writing_is_denied(
        acl_consul, start, prefix, tmp_path):
    computes = tmp_path / "computes.py"
    computes.write_text('x = {"name": "x", "connector": "http://127.0.0.1:7051"}\n')
    replica = start(token(acl_consul, read_only(prefix))[0], compute_file=str(computes))
    wait_until(lambda: denied(prefix, "computes/x", "write") in replica.log(),
               what="the denied write of the compute file in the log")
    assert "cannot write the compute file's computes to Consul yet" in replica.log()
    assert "already defined" not in replica.log()


def test_start_up_logs_each_denied_permission_once_and_health_is_503_with_them(acl_consul,
                                                                               start, prefix):
    replica = start(token(acl_consul, read_only(prefix))[0])
    expected = [denied(prefix, key, "write") for key in
                ("computes/", "placements/", "status/", "leader")]
    expected += [denied(prefix, "resources/", "write", f"{prefix}resources/"),
                 "Consul denied session write on this agent's node: the token needs "
                 'session_prefix "" write.',
                 'Consul denied service write on genisys: the token needs service "genisys" '
                 "write."]
    wait_until(lambda: all(sentence in replica.log() for sentence in expected),
               what="every denied permission in the log")
    assert "key read" not in replica.log()
    health = replica.request("GET", "/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unavailable" and body["leader"] is False
    assert body["error"] == expected[0]
    assert set(expected) <= set(body["troubles"])
    assert any("not registered in Consul's catalog" in t for t in body["troubles"])


def test_the_readme_policy_is_enough_to_define_scale_and_lead(acl_consul, start, prefix,
                                                              tmp_path):
    # Started with too little, the replica recovers by itself once the policy is granted.
    secret, accessor = token(acl_consul, read_only(prefix))
    with ConnectorProcess("examples.memory_connector",
                          log_path=tmp_path / "memory.log") as connector:
        assert connector.call("POST", "/service", {"name": "web"})[0] == 201
        replica = start(secret, settings={"connector": {"poll_interval": "1s"}})
        wait_until(lambda: "the token needs session_prefix" in
                   replica.request("GET", "/health").text, what="health naming the session")
        master(acl_consul, "PUT", f"acl/token/{accessor}",
               {"Policies": [{"ID": policy(acl_consul, readme_policy(prefix))}]})
        wait_until(lambda: replica.request("GET", "/health").status_code == 200, timeout=20,
                   what="a healthy replica")
        wait_until(lambda: replica.request("GET", "/health").json()["leader"], timeout=20,
                   what="the replica leading")
        response = replica.request("POST", "/compute", {"name": "m", "connector": connector.url})
        assert response.status_code == 201, response.text
        response = replica.request("POST", "/service/web/scale", {"number": 2})
        assert response.status_code == 202, response.text
        wait_until(lambda: connector.call("GET", "/status")[1]["running_resources"].get("web")
                   == 2, timeout=20, what="the connector running 2")
        wait_until(lambda: replica.request("GET", "/service/web").json()["observed"], timeout=20,
                   what="the leader's recorded status")
    assert "no longer denied" in replica.log()


# -- pure: the sentences ------------------------------------------------------------------

def test_a_denied_key_names_the_longest_configured_prefix_or_the_key():
    prefixes = ("genisys/", "genisys/resources/")
    assert denied_key("genisys/resources/web", "write", prefixes) == (
        'Consul denied key write on genisys/resources/web: the token needs key_prefix '
        '"genisys/resources/" write.')
    assert denied_key("other/x", "read", prefixes) == (
        'Consul denied key read on other/x: the token needs key "other/x" read.')


def test_a_refused_transaction_names_each_denied_operation_and_nothing_else():
    ops = [_kv("check-index", "g/computes/a", index=3), _kv("cas", "g/resources/b", "1", 0)]
    body = json.dumps({"Errors": [{"OpIndex": 0, "What": "Permission denied"},
                                  {"OpIndex": 1, "What": "Permission denied"}]})
    assert _denials(ops, body, ("g/",)) == [
        'Consul denied key read on g/computes/a: the token needs key_prefix "g/" read.',
        'Consul denied key write on g/resources/b: the token needs key_prefix "g/" write.']
    cas_failure = json.dumps({"Errors": [{"OpIndex": 1, "What": "failed to set key"}]})
    for answer in (cas_failure, "", "[]", '{"Errors": [7, {"OpIndex": 9, "What": '
                                          '"Permission denied"}]}'):
        assert _denials(ops, answer, ("g/",)) == []
