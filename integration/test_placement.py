"""Weight, max and priority end to end: real Consul, a replica process and real connector
processes (bench/counting_connector.py, one per compute)."""

import pytest

from tests.connector_helpers import ConnectorProcess
from tests.support import wait_until

FAST = {"connector": {"poll_interval": "1s", "timeout": "1s"}}


@pytest.fixture
def connectors(tmp_path):
    """Start one counting connector per name; the dict maps names to them."""
    started = {}

    def start(*names):
        for name in names:
            started[name] = ConnectorProcess("bench.counting_connector",
                                             log_path=tmp_path / f"{name}.log")
        return started

    yield start
    for connector in started.values():
        connector.__exit__(None, None, None)


def define(replica, connectors, **limits):
    for name, spec in limits.items():
        body = {"name": name, "connector": connectors[name].url, **spec}
        assert replica.request("POST", "/compute", body).status_code == 201


def scale(replica, number):
    response = replica.request("POST", "/service/web/scale", {"number": number})
    assert response.status_code == 202, response.text
    return response.json()


def running(replica, connectors, placement):
    """The connectors run `placement` and GET /service/web reports it as observed."""
    counts = {name: connector.running("web") for name, connector in connectors.items()}
    observed = replica.request("GET", "/service/web").json()["observed"]
    return counts == {name: placement.get(name, 0) for name in connectors} == observed


def test_weighted_places_by_weight_within_max_and_reports_the_shortfall(start_replica,
                                                                       connectors):
    replica = start_replica({**FAST, "placement": {"strategy": "weighted"}})
    started = connectors("light", "heavy")
    define(replica, started, light={"weight": 1, "max": 4}, heavy={"weight": 3, "max": 5})

    assert scale(replica, 4)["placement"] == {"light": 1, "heavy": 3}
    wait_until(lambda: running(replica, started, {"light": 1, "heavy": 3}), timeout=15,
               what="1 on light and 3 on heavy")
    # heavy's share of 8 would be 6: it stops at its max of 5, light takes the rest.
    assert scale(replica, 8)["placement"] == {"light": 3, "heavy": 5}
    wait_until(lambda: running(replica, started, {"light": 3, "heavy": 5}), timeout=15,
               what="3 on light and 5 on heavy")

    answer = scale(replica, 12)
    assert (answer["placement"], answer["shortfall"]) == ({"light": 4, "heavy": 5}, 3)
    wait_until(lambda: running(replica, started, {"light": 4, "heavy": 5}), timeout=15,
               what="both computes at their max")
    record = replica.request("GET", "/service/web").json()
    assert (record["desired"], record["shortfall"]) == (12, 3)
    assert replica.request("GET", "/service").json()["web"]["shortfall"] == 3


def test_priority_falls_through_to_the_next_compute_at_max(start_replica, connectors):
    replica = start_replica({**FAST, "placement": {"strategy": "priority"}})
    started = connectors("cheap", "spare", "dear")
    define(replica, started, cheap={"priority": 10, "max": 2}, spare={"priority": 5, "max": 3},
           dear={"priority": 0})

    assert scale(replica, 4)["placement"] == {"cheap": 2, "spare": 2}
    wait_until(lambda: running(replica, started, {"cheap": 2, "spare": 2}), timeout=15,
               what="cheap at its max, the rest on spare")
    assert scale(replica, 7)["placement"] == {"cheap": 2, "spare": 3, "dear": 2}
    wait_until(lambda: running(replica, started, {"cheap": 2, "spare": 3, "dear": 2}),
               timeout=15, what="cheap and spare at their max, the rest on dear")
    # A scale-down empties the lowest priority first.
    assert scale(replica, 3)["placement"] == {"cheap": 2, "spare": 1}
    wait_until(lambda: running(replica, started, {"cheap": 2, "spare": 1}), timeout=15,
               what="dear emptied first")
    assert replica.request("GET", "/service/web").json()["shortfall"] == 0
