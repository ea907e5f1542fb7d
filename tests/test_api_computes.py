"""The compute registry API against a real Consul agent and real replica processes."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support import wait_until

LOCAL = {"name": "localdc", "connector": "http://localhost:7051"}
# What a compute shows of its placement fields when its definition leaves them out.
DEFAULTS = {"weight": 1, "max": None, "priority": 0}
SHOWN = {**LOCAL, **DEFAULTS}


def test_post_creates_a_compute_stored_in_consul(replica, consul, prefix):
    response = replica.request("POST", "/compute", LOCAL)
    assert response.status_code == 201
    assert response.json() == SHOWN
    assert response.headers["Location"] == "/compute/localdc"
    assert json.loads(consul.kv_get(f"{prefix}computes/localdc")) == LOCAL  # defaults left out


def test_get_lists_every_compute_in_definition_order(replica):
    for name in ("zeta", "alpha", "mid"):
        assert replica.request("POST", "/compute", {"name": name,
                                                    "connector": f"http://{name}:1"}
                               ).status_code == 201
    listed = replica.request("GET", "/compute").json()
    assert list(listed) == ["zeta", "alpha", "mid"]
    assert list(replica.request("GET", "/compute?consistent").json()) == ["zeta", "alpha", "mid"]


def test_get_one_compute(replica):
    replica.request("POST", "/compute", LOCAL)
    assert replica.request("GET", "/compute/localdc").json() == SHOWN
    assert replica.request("GET", "/compute/localdc?consistent=1").json() == SHOWN


def test_put_updates_an_existing_compute(replica, consul, prefix):
    replica.request("POST", "/compute", LOCAL)
    response = replica.request("PUT", "/compute/localdc", {"connector": "http://localhost:7052"})
    assert response.status_code == 200
    assert response.json() == {"name": "localdc", "connector": "http://localhost:7052", **DEFAULTS}
    assert replica.request("GET", "/compute/localdc").json()["connector"] == "http://localhost:7052"
    assert json.loads(consul.kv_get(f"{prefix}computes/localdc"))["connector"] == \
        "http://localhost:7052"


def test_put_creates_a_missing_compute(replica):
    response = replica.request("PUT", "/compute/fresh",
                               {"name": "fresh", "connector": "https://c.example:8443/api"})
    assert response.status_code == 201
    assert replica.request("GET", "/compute/fresh").json()["connector"] == \
        "https://c.example:8443/api"


def test_delete_removes_a_compute(replica, consul, prefix):
    replica.request("POST", "/compute", LOCAL)
    response = replica.request("DELETE", "/compute/localdc")
    assert response.status_code == 204
    assert response.content == b""
    assert replica.request("GET", "/compute/localdc").status_code == 404
    assert consul.kv_get(f"{prefix}computes/localdc") is None


def test_delete_refuses_a_compute_that_holds_resources(replica, consul, prefix):
    replica.request("POST", "/compute", LOCAL)
    # Through the API: a placement without a total is a leftover the leader removes.
    assert replica.request("POST", "/service/web/scale", {"number": 2, "compute": "localdc"}
                           ).status_code == 202
    response = replica.request("DELETE", "/compute/localdc")
    assert response.status_code == 409
    assert "still holds 2 resources of service 'web'" in response.json()["error"]
    assert replica.request("GET", "/compute/localdc").status_code == 200


BAD_POSTS = [
    ("not json", "{nope", 400, "not valid JSON"),
    ("not an object", "[1, 2]", 400, "must be a JSON object"),
    ("a string", '"localdc"', 400, "must be a JSON object"),
    ("missing name", {"connector": "http://h:1"}, 400, "missing field 'name'"),
    ("missing connector", {"name": "x"}, 400, "missing field 'connector'"),
    ("unknown field", {**LOCAL, "colour": "red"}, 400, "unknown field 'colour'"),
    ("slash in name", {**LOCAL, "name": "a/b"}, 400, "is invalid"),
    ("space in name", {**LOCAL, "name": "a b"}, 400, "is invalid"),
    ("dot dot name", {**LOCAL, "name": ".."}, 400, "is invalid"),
    ("name too long", {**LOCAL, "name": "a" * 65}, 400, "is invalid"),
    ("name not a string", {**LOCAL, "name": 7}, 400, "name must be a string"),
    ("relative url", {**LOCAL, "connector": "/connector"}, 400, "absolute http or https URL"),
    ("ftp url", {**LOCAL, "connector": "ftp://h/x"}, 400, "absolute http or https URL"),
    ("no host", {**LOCAL, "connector": "http://"}, 400, "absolute http or https URL"),
    ("bad port", {**LOCAL, "connector": "http://h:99999"}, 400, "absolute http or https URL"),
    ("connector not a string", {**LOCAL, "connector": 7051}, 400, "must be a string URL"),
    ("weight negative", {**LOCAL, "weight": -1}, 400, "weight must be >= 0, got -1."),
    ("weight a boolean", {**LOCAL, "weight": True}, 400, "weight must be an integer >= 0, not a"),
    ("weight a fraction", {**LOCAL, "weight": 0.5}, 400, "weight must be an integer >= 0, got"),
    ("weight absurd", {**LOCAL, "weight": 10**9}, 400, "weight must be at most 100000"),
    ("max a word", {**LOCAL, "max": "lots"}, 400, "max must be an integer >= 0, got 'lots'."),
    ("max negative", {**LOCAL, "max": -3}, 400, "max must be >= 0, got -3."),
    ("max absurd", {**LOCAL, "max": 1e12}, 400, "max must be at most 100000"),
    ("priority a list", {**LOCAL, "priority": [1]}, 400, "priority must be an integer >= -100000"),
    ("priority absurd", {**LOCAL, "priority": -10**6}, 400, "priority must be >= -100000"),
]


@pytest.mark.parametrize("case,body,status,message", BAD_POSTS, ids=[c[0] for c in BAD_POSTS])
def test_bad_post_is_refused_and_changes_nothing(replica, consul, prefix, case, body, status,
                                                 message):
    response = replica.request("POST", "/compute", body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert consul.kv_keys(f"{prefix}computes/") == []


def test_post_of_an_existing_name_is_a_conflict(replica, consul, prefix):
    replica.request("POST", "/compute", LOCAL)
    response = replica.request("POST", "/compute", {**LOCAL, "connector": "http://other:1"})
    assert response.status_code == 409
    assert response.json() == {"error": "compute 'localdc' already exists."}
    assert json.loads(consul.kv_get(f"{prefix}computes/localdc")) == LOCAL


def test_put_naming_another_compute_is_refused(replica):
    replica.request("POST", "/compute", LOCAL)
    response = replica.request("PUT", "/compute/localdc", {"name": "other",
                                                           "connector": "http://h:2"})
    assert response.status_code == 400
    assert "names compute 'other'" in response.json()["error"]
    assert replica.request("GET", "/compute/localdc").json() == SHOWN
    assert replica.request("GET", "/compute/other").status_code == 404


@pytest.mark.parametrize("body,message", [
    ({}, "missing field 'connector'"),
    ({"connector": "nope"}, "absolute http or https URL"),
    ({"connector": "http://h:1", "extra": 1}, "unknown field 'extra'"),
])
def test_bad_put_is_refused_and_changes_nothing(replica, body, message):
    replica.request("POST", "/compute", LOCAL)
    response = replica.request("PUT", "/compute/localdc", body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert replica.request("GET", "/compute/localdc").json() == SHOWN


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_compute_is_not_found(replica, method):
    response = replica.request(method, "/compute/ghost")
    assert response.status_code == 404
    assert response.json() == {"error": "compute 'ghost' does not exist."}


def test_invalid_name_in_the_path_is_a_bad_request(replica):
    response = replica.request("PUT", "/compute/..", {"connector": "http://h:1"})
    assert response.status_code in (400, 404)  # clients may normalise '..' away
    response = replica.request("GET", "/compute/" + "x" * 65)
    assert response.status_code == 400
    assert "is invalid" in response.json()["error"]


def test_body_over_64_kib_is_refused(replica, consul, prefix):
    body = json.dumps({**LOCAL, "connector": "http://h/" + "x" * 70_000})
    response = replica.request("POST", "/compute", body)
    assert response.status_code == 413
    assert "larger than 64 KiB" in response.json()["error"]
    assert consul.kv_keys(f"{prefix}computes/") == []


def test_chunked_body_over_64_kib_is_refused(replica, consul, prefix):
    chunks = iter([b'{"name": "big", "connector": "http://h/', b"x" * 70_000, b'"}'])
    response = requests.post(replica.url + "/compute", data=chunks, timeout=10)
    assert response.status_code == 413
    assert consul.kv_keys(f"{prefix}computes/") == []


def test_wrong_method_is_refused_with_the_allowed_ones(replica):
    response = replica.request("PATCH", "/compute/localdc", LOCAL)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, PUT, DELETE"
    assert "PATCH is not allowed" in response.json()["error"]
    assert replica.request("DELETE", "/compute").status_code == 405


def test_unknown_path_is_a_json_404(replica):
    response = replica.request("GET", "/computes")
    assert response.status_code == 404
    assert response.json() == {"error": "no such endpoint: /computes."}


def test_two_replicas_share_one_registry(start_replica):
    first, second = start_replica(), start_replica()
    assert first.request("POST", "/compute", LOCAL).status_code == 201
    wait_until(lambda: second.request("GET", "/compute/localdc").status_code == 200,
               timeout=5, what="the second replica to see the new compute")
    assert second.request("PUT", "/compute/localdc", {"connector": "http://h:2"}).status_code == 200
    wait_until(lambda: first.request("GET", "/compute/localdc").json()["connector"] == "http://h:2",
               timeout=5, what="the first replica to see the update")
    assert second.request("DELETE", "/compute/localdc").status_code == 204
    wait_until(lambda: first.request("GET", "/compute/localdc").status_code == 404,
               timeout=5, what="the first replica to see the deletion")


def test_a_replica_reads_its_own_writes_at_once(start_replica):
    first, second = start_replica(), start_replica()
    for i in range(20):
        replica = (first, second)[i % 2]
        assert replica.request("POST", "/compute", {"name": f"c{i}", "connector": f"http://h:{i + 1}"}
                               ).status_code == 201
        assert replica.request("GET", f"/compute/c{i}").status_code == 200
        assert f"c{i}" in replica.request("GET", "/compute").json()


def test_concurrent_creates_of_one_name_have_exactly_one_winner(start_replica):
    replicas = [start_replica(), start_replica()]

    def create(i):
        body = {"name": "contested", "connector": f"http://h:{1000 + i}"}
        return replicas[i % 2].request("POST", "/compute", body).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(create, range(50)))
    assert statuses.count(201) == 1
    assert statuses.count(409) == 49


def test_registry_survives_a_replica_restart(start_replica):
    first = start_replica()
    first.request("POST", "/compute", LOCAL)
    assert first.stop() == 0
    second = start_replica()
    assert second.request("GET", "/compute").json() == {"localdc": SHOWN}


def test_the_compute_file_fills_gaps_and_never_overwrites_api_changes(start_replica, tmp_path):
    computes = tmp_path / "computes.py"
    computes.write_text('local = {"name": "local", "connector": "http://localhost:7051"}\n'
                        'other = {"name": "other", "connector": "http://localhost:7052"}\n')
    first = start_replica(compute_file=str(computes))
    wait_until(lambda: len(first.request("GET", "/compute").json()) == 2, timeout=10,
               what="the compute file in Consul")
    assert list(first.request("GET", "/compute").json()) == ["local", "other"]
    assert first.request("PUT", "/compute/local", {"connector": "http://changed:1"}
                         ).status_code == 200
    assert first.request("DELETE", "/compute/other").status_code == 204
    assert first.stop() == 0

    second = start_replica(compute_file=str(computes))
    wait_until(lambda: "other" in second.request("GET", "/compute").json(), timeout=10,
               what="the deleted compute to be written again")
    assert second.request("GET", "/compute/local").json()["connector"] == "http://changed:1"
    assert "already defined in Consul" in second.log()


def test_weight_max_and_priority_are_stored_shown_and_updated(replica, consul, prefix):
    limits = {"weight": 3, "max": 5, "priority": -2}
    response = replica.request("POST", "/compute", {**LOCAL, **limits})
    assert response.status_code == 201
    assert response.json() == {**LOCAL, **limits}
    assert json.loads(consul.kv_get(f"{prefix}computes/localdc")) == {**LOCAL, **limits}
    assert replica.request("GET", "/compute").json() == {"localdc": {**LOCAL, **limits}}
    # A PUT replaces the definition: fields left out take their defaults (not stored).
    response = replica.request("PUT", "/compute/localdc", {"connector": LOCAL["connector"],
                                                           "max": None, "priority": "7"})
    assert response.json() == {**LOCAL, "weight": 1, "max": None, "priority": 7}
    assert replica.request("GET", "/compute/localdc").json()["priority"] == 7
    assert json.loads(consul.kv_get(f"{prefix}computes/localdc")) == {**LOCAL, "priority": 7}


def test_a_bad_limit_in_a_put_changes_nothing(replica):
    replica.request("POST", "/compute", {**LOCAL, "max": 4})
    response = replica.request("PUT", "/compute/localdc", {"connector": LOCAL["connector"],
                                                           "max": -1})
    assert response.status_code == 400
    assert response.json() == {"error": "max must be >= 0, got -1."}
    assert replica.request("GET", "/compute/localdc").json()["max"] == 4
