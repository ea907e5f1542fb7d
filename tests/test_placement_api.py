"""Weight, max and priority through the API: a replica process against a real Consul agent
(nothing listens at the connectors' addresses: these tests are about placement)."""

import pytest

from tests.support import wait_until
from tests.test_commands import genisys


def computes(replica, **limits):
    """Create computes a, b, c... with the given limits (nothing listens there)."""
    for port, (name, spec) in enumerate(limits.items(), start=9):
        body = {"name": name, "connector": f"http://127.0.0.1:{port}", **spec}
        assert replica.request("POST", "/compute", body).status_code == 201


def scale(replica, number, **body):
    response = replica.request("POST", "/service/web/scale", {"number": number, **body})
    assert response.status_code == 202, response.text
    return response.json()


def test_weighted_splits_by_weight_within_max(start_replica):
    replica = start_replica({"placement": {"strategy": "weighted"}})
    computes(replica, a={"weight": 1}, b={"weight": 3}, c={"weight": 4, "max": 1})
    assert scale(replica, 8)["placement"] == {"a": 2, "b": 5, "c": 1}
    assert scale(replica, 12)["placement"] == {"a": 3, "b": 8, "c": 1}  # a scale-up only adds


def test_priority_fills_the_highest_and_falls_through_on_max(start_replica):
    replica = start_replica({"placement": {"strategy": "priority"}})
    computes(replica, a={"priority": 0}, b={"priority": 10, "max": 2})
    assert scale(replica, 5)["placement"] == {"a": 3, "b": 2}


@pytest.mark.parametrize("strategy", ["first", "spread", "weighted", "priority"])
def test_a_total_that_does_not_fit_is_accepted_and_its_shortfall_shown(start_replica, strategy):
    replica = start_replica({"placement": {"strategy": strategy}})
    computes(replica, a={"max": 3}, b={"max": 2})
    dry = replica.request("POST", "/service/web/scale?dry_run=1", {"number": 7}).json()
    assert (dry["placement"], dry["shortfall"]) == ({"a": 3, "b": 2}, 2)
    answer = scale(replica, 7)
    assert answer["placement"] == {"a": 3, "b": 2}
    assert answer["shortfall"] == 2
    assert answer["note"] == (f"2 of 7 do not fit: every compute the {strategy} strategy may "
                              "use is at its max; the leader places them when room appears (a "
                              "higher max or a new compute).")
    record = replica.request("GET", "/service/web").json()
    assert (record["desired"], record["shortfall"]) == (7, 2)
    assert replica.request("GET", "/service").json()["web"]["shortfall"] == 2


def test_a_named_compute_takes_what_fits_and_the_strategy_places_the_rest(start_replica):
    replica = start_replica({"placement": {"strategy": "priority"}})
    computes(replica, a={"priority": 5}, b={"max": 2})
    assert scale(replica, 5, compute="b")["placement"] == {"a": 3, "b": 2}
    assert "shortfall" not in scale(replica, 6, compute="b")


def test_the_leader_places_the_shortfall_when_a_max_is_raised(replica):
    computes(replica, a={"max": 2})
    assert scale(replica, 5)["shortfall"] == 3
    response = replica.request("PUT", "/compute/a", {"connector": "http://127.0.0.1:9", "max": 4})
    assert response.status_code == 200
    wait_until(lambda: replica.request("GET", "/service/web").json()["placement"] == {"a": 4},
               timeout=10, what="the leader to place what now fits")
    assert replica.request("GET", "/service/web").json()["shortfall"] == 1


def test_the_leader_moves_what_is_over_a_lowered_max(replica):
    computes(replica, a={}, b={})
    scale(replica, 5)
    response = replica.request("PUT", "/compute/a", {"connector": "http://127.0.0.1:9", "max": 1})
    assert response.status_code == 200
    wait_until(lambda: replica.request("GET", "/service/web").json()["placement"] ==
               {"a": 1, "b": 4}, timeout=10, what="the leader to move what is over the max")


def test_genisys_scale_says_what_does_not_fit(replica):
    computes(replica, a={"max": 2})
    scaled = genisys("scale", "web", "3", addr=replica.url)
    assert scaled.stdout.splitlines() == [
        "web: desired 3, placement a=2",
        "1 of 3 do not fit: every compute the first strategy may use is at its max; the leader "
        "places them when room appears (a higher max or a new compute)."]
    dry = genisys("scale", "web", "4", "--dry-run", addr=replica.url)
    assert "2 of 4 do not fit" in dry.stdout.splitlines()[1]
