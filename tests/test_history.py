"""The order history: what the leader records for each order, kept in Consul, served by
GET /service/{svc}/events and GET /events. Real Consul, a real connector process."""

import json
from datetime import UTC, datetime

import pytest

from genisys.plan import new_histories
from tests.connector_helpers import ConnectorProcess
from tests.support import wait_until

FAST = {"connector": {"poll_interval": "1s", "timeout": "1s"}}
FIELDS = {"time", "service", "compute", "from", "to", "term", "result", "reason"}


def event(service, n):
    return {"service": service, "to": n}


# -- pure: the bound and the order ------------------------------------------------------

def test_new_events_come_first_and_the_oldest_are_dropped():
    stored = {"web": [event("web", n) for n in (3, 2, 1)]}
    assert new_histories(stored, [event("web", 4), event("web", 5)], 4) == {
        "web": [event("web", n) for n in (5, 4, 3, 2)]}


def test_only_services_with_new_events_get_a_new_history():
    stored = {"web": [event("web", 1)], "api": [event("api", 1)]}
    assert new_histories(stored, [event("db", 2)], 50) == {"db": [event("db", 2)]}
    assert new_histories(stored, [], 50) == {}


# -- end to end -----------------------------------------------------------------------

def events(replica, service, query=""):
    response = replica.request("GET", f"/service/{service}/events{query}")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def test_each_order_is_recorded_newest_first(start_replica, counting, consul, prefix):
    replica = start_replica(FAST)
    replica.request("POST", "/compute", {"name": "one", "connector": counting.url})
    before = datetime.now(UTC)
    replica.request("POST", "/service/web/scale", {"number": 2})
    wait_until(lambda: counting.running("web") == 2, what="web at 2")
    first = wait_until(lambda: events(replica, "web"), what="the first event")
    replica.request("POST", "/service/web/scale", {"number": 0})
    history = wait_until(lambda: len(events(replica, "web")) == 2 and events(replica, "web"),
                         what="the second event")
    assert [(e["from"], e["to"]) for e in history] == [(2, 0), (0, 2)]
    assert history[1] == first[0]
    newest = history[0]
    assert set(newest) == FIELDS
    assert (newest["service"], newest["compute"], newest["result"]) == ("web", "one", "ok")
    assert newest["reason"] == "placement 0, observed 2"
    assert datetime.fromisoformat(newest["time"]) >= before
    assert newest["term"] >= 1
    # Kept in Consul, as the API serves it.
    assert json.loads(consul.kv_get(f"{prefix}events/web")) == history
    assert events(replica, "web", "?limit=1") == history[:1]


def test_a_refused_order_is_recorded_with_its_error(start_replica, tmp_path):
    replica = start_replica(FAST)
    with ConnectorProcess("bench.counting_connector", "--max-instances", "2",
                          log_path=tmp_path / "small.log") as small:
        replica.request("POST", "/compute", {"name": "small", "connector": small.url})
        replica.request("POST", "/service/web/scale", {"number": 5})
        failed = wait_until(lambda: events(replica, "web"), what="a refused order")[0]
    assert failed["result"] == "failed"
    assert (failed["from"], failed["to"]) == (0, 5)
    assert "2" in failed["reason"] and "\n" not in failed["reason"]


def test_events_across_services_since_a_time(start_replica, counting):
    replica = start_replica(FAST)
    replica.request("POST", "/compute", {"name": "one", "connector": counting.url})
    replica.request("POST", "/service/web/scale", {"number": 1})
    wait_until(lambda: events(replica, "web"), what="web's order")
    middle = datetime.now(UTC).isoformat()
    replica.request("POST", "/service/api/scale", {"number": 3})
    wait_until(lambda: events(replica, "api"), what="api's order")

    every = replica.request("GET", "/events").json()["events"]
    assert [e["service"] for e in every] == ["api", "web"]
    since = replica.request("GET", "/events", params={"since": middle}).json()["events"]
    assert [e["service"] for e in since] == ["api"]
    assert replica.request("GET", "/events?limit=1").json()["events"] == every[:1]


@pytest.mark.parametrize("path,message", [
    ("/events?limit=0", "limit must be an integer from 1 to 1000"),
    ("/events?limit=1001", "limit must be an integer from 1 to 1000"),
    ("/events?since=yesterday", "since must be an ISO 8601 time"),
    ("/service/web/events?limit=x", "limit must be an integer"),
])
def test_bad_queries_are_refused_in_one_sentence(replica, path, message):
    response = replica.request("GET", path)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_the_history_of_an_unknown_service_is_not_found(replica):
    response = replica.request("GET", "/service/ghost/events")
    assert response.status_code == 404
    assert "'ghost' is not known" in response.json()["error"]


def test_a_service_keeps_its_last_50_orders(start_replica, counting, consul, prefix):
    replica = start_replica(FAST)
    replica.request("POST", "/compute", {"name": "one", "connector": counting.url})
    for number in range(1, 56):
        replica.request("POST", "/service/web/scale", {"number": number})
        wait_until(lambda: (events(replica, "web", "?limit=1") or [{}])[0].get("to") == number,
                   what=f"the order to {number}")
    stored = json.loads(consul.kv_get(f"{prefix}events/web"))
    assert [e["to"] for e in stored] == list(range(55, 5, -1))
    assert events(replica, "web") == stored
