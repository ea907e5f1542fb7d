"""The scale API and GET /service against a real Consul agent (no leader needed)."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

# Nothing listens at these addresses: these tests are about the API, not connectors.
A = {"name": "a", "connector": "http://127.0.0.1:9"}
B = {"name": "b", "connector": "http://127.0.0.1:19"}


@pytest.fixture
def two_computes(replica):
    for compute in (A, B):
        assert replica.request("POST", "/compute", compute).status_code == 201
    return replica


def stored(consul, prefix, service):
    total = consul.kv_get(f"{prefix}resources/{service}")
    placement = consul.kv_get(f"{prefix}placements/{service}")
    return (total and total.decode(), placement and json.loads(placement))


def test_scale_on_a_compute_writes_total_and_placement(two_computes, consul, prefix):
    response = two_computes.request("POST", "/service/web/scale", {"number": 3, "compute": "b"})
    assert response.status_code == 202
    assert response.json() == {"service": "web", "desired": 3, "placement": {"b": 3}}
    assert stored(consul, prefix, "web") == ("3", {"b": 3})


def test_scale_without_compute_uses_the_first_compute_defined(two_computes, consul, prefix):
    response = two_computes.request("POST", "/service/web/scale", {"number": "2"})
    assert response.status_code == 202
    assert response.json()["placement"] == {"a": 2}
    assert stored(consul, prefix, "web") == ("2", {"a": 2})


def test_shrinking_takes_from_the_named_compute_then_the_newest(two_computes):
    two_computes.request("POST", "/service/web/scale", {"number": 2, "compute": "a"})
    two_computes.request("POST", "/service/web/scale", {"number": 5, "compute": "b"})
    response = two_computes.request("POST", "/service/web/scale", {"number": 1, "compute": "a"})
    assert response.json()["placement"] == {"b": 1}
    response = two_computes.request("POST", "/service/web/scale", {"number": 0})
    assert response.json()["placement"] == {}


def test_spread_strategy(start_replica):
    replica = start_replica({"placement": {"strategy": "spread"}})
    for compute in (A, B):
        replica.request("POST", "/compute", compute)
    # The remainder goes by a hash of the service name: to b for "web".
    assert replica.request("POST", "/service/web/scale", {"number": 5}).json()["placement"] == \
        {"a": 2, "b": 3}


def test_get_service_shows_desired_and_placement(two_computes):
    two_computes.request("POST", "/service/web/scale", {"number": 3, "compute": "b"})
    record = two_computes.request("GET", "/service/web").json()
    assert record["desired"] == 3
    assert record["placement"] == {"b": 3}
    # No connector answers at these addresses: the leader can only report errors.
    assert record["observed"] == {}
    assert set(record) == {"desired", "placement", "observed", "errors", "warnings",
                           "in_progress", "stepping", "observed_at", "paused", "state",
                           "shortfall"}
    assert record["shortfall"] == 0
    listed = two_computes.request("GET", "/service").json()
    assert list(listed) == ["web"]
    assert listed["web"]["placement"] == {"b": 3}


def test_unknown_service_is_not_found(two_computes):
    response = two_computes.request("GET", "/service/ghost")
    assert response.status_code == 404
    assert "'ghost' is not known" in response.json()["error"]


@pytest.mark.parametrize("body,status,message", [
    ({"number": 3, "compute": "nowhere"}, 404, "compute 'nowhere' does not exist"),
    ({"number": -1}, 400, "must be >= 0"),
    ({"number": "three"}, 400, "must be an integer"),
    ({"number": 2.5}, 400, "must be an integer"),
    ({"number": True}, 400, "not a boolean"),
    ({}, 400, "missing field 'number'"),
    ({"number": 1, "where": "a"}, 400, "unknown field 'where'"),
    ({"number": 1, "compute": "a/b"}, 400, "compute 'a/b' is invalid"),
    ("[3]", 400, "must be a JSON object"),
    ("number=3", 400, "not valid JSON"),
])
def test_bad_scale_requests_change_nothing(two_computes, consul, prefix, body, status, message):
    response = two_computes.request("POST", "/service/web/scale", body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert stored(consul, prefix, "web") == (None, None)


def test_bad_service_name_is_refused(two_computes):
    response = two_computes.request("POST", "/service/" + "x" * 65 + "/scale", {"number": 1})
    assert response.status_code == 400
    assert "service name" in response.json()["error"]


def test_scale_without_any_compute_is_a_conflict(replica, consul, prefix):
    response = replica.request("POST", "/service/web/scale", {"number": 1})
    assert response.status_code == 409
    assert "no compute is defined" in response.json()["error"]
    assert stored(consul, prefix, "web") == (None, None)


def test_a_compute_created_on_another_replica_is_usable_at_once(start_replica):
    first, second = start_replica(), start_replica()
    assert first.request("POST", "/compute", A).status_code == 201
    response = second.request("POST", "/service/web/scale", {"number": 1, "compute": "a"})
    assert response.status_code == 202


def test_racing_scales_through_two_replicas_end_in_one_of_the_numbers(start_replica, consul,
                                                                       prefix):
    replicas = [start_replica(), start_replica()]
    for compute in (A, B):
        replicas[0].request("POST", "/compute", compute)
    numbers = list(range(1, 41))

    def scale(i):
        body = {"number": numbers[i], "compute": ("a", "b")[i % 2]}
        return replicas[i % 2].request("POST", "/service/web/scale", body).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert set(pool.map(scale, range(len(numbers)))) == {202}
    total, placement = stored(consul, prefix, "web")
    assert int(total) in numbers
    assert sum(placement.values()) == int(total)
