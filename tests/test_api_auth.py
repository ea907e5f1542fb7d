"""API authentication against real replicas and a real Consul: roles, every auth failure
(which changes nothing), revocation across replicas, start-up refusal, request ids and
security headers, the `genisys token` commands."""

import re
import subprocess
import sys

import pytest

from tests.support import ROOT, wait_until

BOOTSTRAP = "bootstrap-" + "7" * 40
ADMIN = {"Authorization": f"Bearer {BOOTSTRAP}"}


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def secured(start_replica):
    return start_replica(env={"GENISYS_BOOTSTRAP_TOKEN": BOOTSTRAP})


def create(replica, name: str, role: str) -> str:
    response = replica.request("POST", "/token", {"name": name, "role": role}, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name and response.json()["role"] == role
    return response.json()["secret"]


def state(consul, prefix) -> dict:
    """The registry, desired state and tokens, keys and values: what a refused request
    must not change (the election's own keys change by themselves)."""
    kept = tuple(f"{prefix}{part}/" for part in ("computes", "connectors", "resources",
                                                 "placements", "tokens"))
    return {key: consul.kv_get(key) for key in consul.kv_keys(prefix) if key.startswith(kept)}


def test_roles_decide_what_each_token_may_do(secured):
    reader, operator = create(secured, "reader", "read"), create(secured, "operator", "operate")
    compute = {"name": "local", "connector": "http://127.0.0.1:9"}
    assert secured.request("POST", "/compute", compute, headers=ADMIN).status_code == 201
    for path in ("/compute", "/compute/local", "/service", "/leader"):
        assert secured.request("GET", path, headers=bearer(reader)).status_code != 401
    assert secured.request("GET", "/compute", headers=bearer(reader)).status_code == 200

    refused = secured.request("POST", "/service/web/scale", {"number": 1},
                              headers=bearer(reader))
    assert refused.status_code == 403
    assert refused.json() == {"error": "this request needs a token with role operate; this "
                                       "token has role read."}
    assert secured.request("POST", "/service/web/scale", {"number": 1},
                           headers=bearer(operator)).status_code == 202
    # The access line names whose token did it (never the secret).
    wait_until(lambda: re.search(r"202 POST /service/web/scale .* token operator$",
                                 secured.log(), re.MULTILINE), what="the scale's access line")
    assert operator not in secured.log()
    refused = secured.request("DELETE", "/compute/local", headers=bearer(operator))
    assert refused.status_code == 403 and "role admin" in refused.json()["error"]
    assert secured.request("GET", "/token", headers=bearer(operator)).status_code == 403


def test_health_is_open_and_everything_else_asks_for_a_token(secured):
    assert secured.request("GET", "/health").status_code in (200, 503)
    for method, path in [("GET", "/compute"), ("GET", "/service/web"), ("GET", "/leader"),
                         ("POST", "/service/web/scale"), ("GET", "/token"),
                         ("DELETE", "/token/x")]:
        response = secured.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="genisys"'
        assert list(response.json()) == ["error"]


@pytest.mark.parametrize("headers, query, status, sentence", [
    ({}, "", 401, "needs a token"),
    ({"Authorization": "Basic YWRtaW46YWRtaW4="}, "", 401, "must be Bearer"),
    ({"Authorization": "Bearer "}, "", 401, "empty"),
    ({"Authorization": "Bearer gen_ghost_" + "a" * 64}, "", 401, "not valid"),
    ({"Authorization": "Bearer " + BOOTSTRAP[:-1]}, "", 401, "not valid"),
    (ADMIN, f"?token={BOOTSTRAP}", 400, "query string"),
    ({}, f"?access_token={BOOTSTRAP}", 400, "query string"),
    ("the read token", "", 403, "needs a token with role"),
])
def test_every_auth_failure_answers_its_status_and_changes_nothing(
        secured, consul, prefix, headers, query, status, sentence):
    assert secured.request("POST", "/compute", {"name": "local", "connector": "http://h:1"},
                           headers=ADMIN).status_code == 201
    reader = create(secured, "keep", "read")
    if headers == "the read token":
        headers = bearer(reader)
    before = state(consul, prefix)
    assert len(before) == 3  # the compute, its connector's claim, the token
    attempts = [("POST", "/compute", {"name": "evil", "connector": "http://127.0.0.1:9"}),
                ("POST", "/service/evil/scale", {"number": 3}),
                ("POST", "/token", {"name": "evil", "role": "admin"}),
                ("DELETE", "/compute/local", None), ("DELETE", "/token/keep", None)]
    for method, path, body in attempts:
        response = secured.request(method, path + query, body, headers=headers)
        assert response.status_code == status, (method, path, response.text)
        assert sentence in response.json()["error"]
        assert BOOTSTRAP not in response.text
        assert (response.headers.get("WWW-Authenticate") is not None) == (status == 401)
    assert state(consul, prefix) == before
    assert BOOTSTRAP not in secured.log()  # access lines show the path, not the query


def test_a_revoked_or_unknown_token_changes_nothing(secured, consul, prefix):
    secret = create(secured, "temp", "admin")
    assert secured.request("DELETE", "/token/temp", headers=ADMIN).status_code == 204
    before = state(consul, prefix)
    response = secured.request("POST", "/compute", {"name": "x", "connector": "http://h:1"},
                               headers=bearer(secret))
    assert response.status_code == 401 and "revoked" in response.json()["error"]
    assert state(consul, prefix) == before
    assert secured.request("DELETE", "/token/temp", headers=ADMIN).status_code == 404


def test_tokens_are_listed_without_secrets_and_stored_only_as_salted_hashes(
        secured, consul, prefix):
    secret = create(secured, "ci", "operate")
    listed = secured.request("GET", "/token", headers=ADMIN)
    assert listed.status_code == 200
    assert list(listed.json()) == ["ci"]
    assert set(listed.json()["ci"]) == {"name", "role", "created"}
    stored = consul.kv_get(f"{prefix}tokens/ci").decode()
    assert secret not in stored and secret[-64:] not in stored and '"hash"' in stored
    assert secured.request("POST", "/token", {"name": "ci", "role": "read"},
                           headers=ADMIN).status_code == 409
    for body, sentence in [({"name": "x", "role": "root"}, "role must be one of"),
                           ({"name": "bad name", "role": "read"}, "token name"),
                           ({"name": "x"}, "missing field 'role'"),
                           ({"name": "x", "role": "read", "secret": "mine"}, "unknown field")]:
        response = secured.request("POST", "/token", body, headers=ADMIN)
        assert response.status_code == 400 and sentence in response.json()["error"]
    assert list(secured.request("GET", "/token", headers=ADMIN).json()) == ["ci"]
    # Neither the bootstrap token nor a created secret is ever written to the log.
    assert secret not in secured.log() and BOOTSTRAP not in secured.log()


def test_tokens_created_and_revoked_through_one_replica_take_effect_on_another_within_a_second(
        start_replica):
    env = {"GENISYS_BOOTSTRAP_TOKEN": BOOTSTRAP}
    one, two = start_replica(env=env), start_replica(env=env)
    secret = create(one, "roaming", "read")
    wait_until(lambda: two.request("GET", "/compute", headers=bearer(secret)).status_code == 200,
               timeout=1.0, what="the new token to work on the other replica")
    assert one.request("DELETE", "/token/roaming", headers=ADMIN).status_code == 204
    wait_until(lambda: two.request("GET", "/compute", headers=bearer(secret)).status_code == 401,
               timeout=1.0, what="the revocation to reach the other replica")
    # The other replica kept serving throughout.
    assert two.request("GET", "/compute", headers=ADMIN).status_code == 200


def test_without_a_bootstrap_token_on_loopback_the_api_is_open(replica):
    assert replica.request("GET", "/compute").status_code == 200
    assert "API authentication is off" in replica.log()


def test_a_replica_bound_beyond_loopback_without_a_token_refuses_to_start(start_replica):
    replica = start_replica({"genisys": {"bind": "0.0.0.0"}}, wait=False)
    assert replica.process.wait(15) == 2
    log = replica.log().strip()
    assert len(log.splitlines()) == 1
    assert "not a loopback address" in log and "GENISYS_BOOTSTRAP_TOKEN" in log
    assert "--insecure" in log


def test_insecure_serves_open_beyond_loopback_and_says_so(start_replica):
    replica = start_replica({"genisys": {"bind": "0.0.0.0"}}, args=["--insecure"])
    assert replica.request("GET", "/compute").status_code == 200
    assert "WARNING" in replica.log() and "WITHOUT authentication" in replica.log()
    health = wait_until(lambda: (r := replica.request("GET", "/health")).ok and r,
                        what="a healthy replica")
    assert "without authentication" in health.json()["insecure"]


def test_beyond_loopback_with_a_bootstrap_token_file_auth_is_on(start_replica, tmp_path):
    path = tmp_path / "bootstrap"
    path.write_text(BOOTSTRAP + "\n")
    replica = start_replica({"genisys": {"bind": "0.0.0.0",
                                         "bootstrap_token_file": str(path)}})
    assert replica.request("GET", "/compute").status_code == 401
    assert replica.request("GET", "/compute", headers=ADMIN).status_code == 200


def test_a_short_bootstrap_token_stops_start_up_without_showing_it(start_replica):
    replica = start_replica(env={"GENISYS_BOOTSTRAP_TOKEN": "hunter2"}, wait=False)
    assert replica.process.wait(15) == 2
    assert "at least 32" in replica.log() and "hunter2" not in replica.log()


def test_answers_carry_a_request_id_and_security_headers(secured):
    sane = "3f2a-trace.01:x"
    for headers in ({**ADMIN, "X-Request-Id": sane}, {"X-Request-Id": sane}):
        response = secured.request("GET", "/compute", headers=headers)
        assert response.headers["X-Request-Id"] == sane
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
    made_up = secured.request("GET", "/compute", headers={"X-Request-Id": "a b\tc" * 60})
    assert made_up.headers["X-Request-Id"] != "a b\tc" * 60
    assert len(made_up.headers["X-Request-Id"]) == 16
    wait_until(lambda: f"request {sane}" in secured.log(), what="the request id in the log")
    line = next(line for line in secured.log().splitlines() if f"request {sane}" in line)
    assert "GET /compute" in line


def run_genisys(replica, *args, token=BOOTSTRAP):
    env = {"GENISYS_ADDR": replica.url, "GENISYS_TOKEN": token, "PATH": ""}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], env=env,
                          capture_output=True, text=True, timeout=30)


def test_the_readmes_token_commands(secured):
    """The `genisys` lines of the README's Security block, with the exit code each says."""
    readme = (ROOT / "README.md").read_text()
    at = readme.index("genisys token create deploy-bot")
    block = readme[readme.rindex("```", 0, at):readme.index("```", at)]
    lines = [line.strip() for line in block.splitlines() if line.strip().startswith("genisys ")]
    assert len(lines) == 4
    for line in lines:
        command, _, comment = line.partition("  #")
        documented = re.search(r"exit (\d)", comment)
        result = run_genisys(secured, *command.split()[1:])
        assert result.returncode == (int(documented.group(1)) if documented else 0), \
            line + result.stderr
    assert list(secured.request("GET", "/token", headers=ADMIN).json()) == ["dashboard"]


def test_the_token_commands_create_list_and_revoke(secured):
    def genisys(*args, token=BOOTSTRAP):
        return run_genisys(secured, *args, token=token)

    created = genisys("token", "create", "deploy", "operate")
    assert created.returncode == 1, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("gen_deploy_")
    listed = genisys("token", "list")
    assert listed.returncode == 0 and "deploy" in listed.stdout and "operate" in listed.stdout
    assert secret not in listed.stdout
    assert genisys("token", "list", token=secret).returncode == 2  # operate is not admin
    assert genisys("token", "revoke", "deploy").returncode == 1
    refused = genisys("status", token=secret)
    assert refused.returncode == 2 and "not valid" in refused.stderr
    assert genisys("token", "revoke", "deploy").returncode == 2
