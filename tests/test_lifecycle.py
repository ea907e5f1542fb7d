"""The service lifecycle: delete, pause and resume, dry run and the index precondition.
Real Consul, replicas as processes, a real connector process; the decisions are pure."""

import pytest
import requests

from genisys.plan import Desired, Observed, dry_run_orders, finished_deletes, orphans, \
    scale_orders
from tests.support import wait_until

FAST = {"connector": {"poll_interval": "1s", "timeout": "1s"}}
NOWHERE = "http://127.0.0.1:9"  # nothing listens there


# -- pure decisions -----------------------------------------------------------------------

COMPUTES = {"a": "http://a", "b": "http://b"}


def test_a_paused_service_gets_no_order_unless_it_is_being_deleted():
    observed = Observed(counts={("web", "a"): 1, ("web", "b"): 0})
    paused = Desired(COMPUTES, {"web": 3}, {"web": {"a": 3}}, paused=frozenset({"web"}))
    assert scale_orders(paused, observed) == []
    deleting = Desired(COMPUTES, {"web": 0}, {"web": {}}, paused=frozenset({"web"}),
                       deleting=frozenset({"web"}))
    assert [(o.compute, o.number) for o in scale_orders(deleting, observed)] == [("a", 0)]


def test_a_delete_finishes_once_every_compute_reports_zero():
    desired = Desired(COMPUTES, {"web": 0}, {"web": {}}, deleting=frozenset({"web"}))
    assert finished_deletes(desired, Observed(counts={("web", "a"): 0})) == []  # b unknown
    assert finished_deletes(desired, Observed(counts={("web", "a"): 0, ("web", "b"): 1})) == []
    assert finished_deletes(desired, Observed(counts={("web", "a"): 0, ("web", "b"): 0})) == \
        ["web"]
    assert finished_deletes(Desired({}, {"web": 0}, {}, deleting=frozenset({"web"})),
                            Observed()) == ["web"]


def test_orphans_are_known_services_without_a_total_that_nobody_manages():
    desired = Desired(COMPUTES, {"web": 1}, {"web": {"a": 1}})
    assert orphans({"web", "old", "catalog-svc"}, desired, {"web", "catalog-svc"}) == {"old"}


def test_dry_run_orders_count_an_unobserved_compute_as_zero():
    assert dry_run_orders({"a": 2, "b": 1}, ["a", "b", "c"], {"a": 2, "c": 1}) == [
        {"compute": "b", "from": 0, "to": 1}, {"compute": "c", "from": 1, "to": 0}]


# -- end to end -----------------------------------------------------------------------------

def scaled(replica, counting, service, number):
    response = replica.request("POST", f"/service/{service}/scale", {"number": number})
    assert response.status_code == 202, response.text
    wait_until(lambda: replica.request("GET", f"/service/{service}").json()["observed"]
               == {"one": number} and counting.running(service) == number,
               what=f"{service} at {number}")


def cycles_after(replica, n=2):
    """Wait until the leader completed `n` more cycles than it had now."""
    def last():
        return (requests.get(replica.url + "/health", timeout=5).json().get("last_cycle")
                or {}).get("at")
    seen = [last()]

    def moved():
        if last() != seen[-1]:
            seen.append(last())
        return len(seen) > n
    wait_until(moved, timeout=15, what=f"{n} more reconcile cycles")


@pytest.fixture
def leading(start_replica, counting):
    replica = start_replica(FAST)
    assert replica.request("POST", "/compute", {"name": "one", "connector": counting.url}) \
        .status_code == 201
    wait_until(lambda: requests.get(replica.url + "/health", timeout=5).json().get("leader"),
               what="the replica to lead")
    return replica


def test_delete_scales_to_zero_then_forgets_every_key(leading, counting, consul, prefix):
    scaled(leading, counting, "web", 3)
    wait_until(lambda: consul.kv_get(f"{prefix}events/web"), what="web's history")
    response = leading.request("DELETE", "/service/web")
    assert response.status_code == 202
    body = response.json()
    assert (body["service"], body["state"], body["desired"]) == ("web", "deleting", 0)
    assert "scales it to 0" in body["next"]
    wait_until(lambda: leading.request("GET", "/service/web").status_code == 404,
               what="web forgotten")
    assert counting.running("web") == 0
    # The change journal's entry stays until the leader trims it (README "Consistency").
    assert [key for key in consul.kv_keys(prefix)
            if key.endswith("/web") and "/changes/" not in key] == []
    assert leading.request("DELETE", "/service/web").status_code == 404


def test_a_delete_waits_for_every_compute_and_refuses_scales_meanwhile(leading, counting):
    leading.request("POST", "/compute", {"name": "away", "connector": NOWHERE})
    scaled(leading, counting, "web", 1)
    assert leading.request("DELETE", "/service/web").status_code == 202
    wait_until(lambda: counting.running("web") == 0, what="web at 0 on one")
    cycles_after(leading)
    # "away" cannot report 0: the service stays, shown as deleting.
    record = leading.request("GET", "/service/web").json()
    assert (record["state"], record["desired"], record["placement"]) == ("deleting", 0, {})
    again = leading.request("DELETE", "/service/web")  # idempotent
    assert (again.status_code, again.json()["state"]) == (202, "deleting")
    refused = leading.request("POST", "/service/web/scale", {"number": 2})
    assert refused.status_code == 409
    assert refused.json()["error"] == ("service 'web' is being deleted: scale it once it is "
                                       "gone.")
    assert leading.request("POST", "/service/web/pause").status_code == 409
    # Once the unreachable compute is gone, the delete finishes.
    assert leading.request("DELETE", "/compute/away").status_code == 204
    wait_until(lambda: leading.request("GET", "/service/web").status_code == 404,
               what="web forgotten")


def test_a_paused_service_is_observed_but_not_ordered_until_resumed(leading, counting):
    scaled(leading, counting, "web", 1)
    response = leading.request("POST", "/service/web/pause")
    assert (response.status_code, response.json()) == (200, {"service": "web", "paused": True})
    assert leading.request("POST", "/service/web/scale", {"number": 3}).status_code == 202
    cycles_after(leading)
    assert counting.running("web") == 1
    record = leading.request("GET", "/service/web").json()
    assert (record["paused"], record["desired"], record["observed"]) == (True, 3, {"one": 1})
    response = leading.request("POST", "/service/web/resume")
    assert (response.status_code, response.json()) == (200, {"service": "web", "paused": False})
    wait_until(lambda: counting.running("web") == 3, what="web at 3 after resume")
    assert leading.request("GET", "/service/web").json()["paused"] is False


def test_dry_run_answers_the_orders_and_changes_nothing(leading, counting, consul, prefix):
    scaled(leading, counting, "web", 2)
    stored = consul.kv_get(f"{prefix}resources/web"), consul.kv_get(f"{prefix}placements/web")
    response = leading.request("POST", "/service/web/scale?dry_run=1", {"number": 5})
    assert response.status_code == 200
    plan = response.json()
    assert plan["orders"] == [{"compute": "one", "from": 2, "to": 5}]
    assert (plan["service"], plan["desired"], plan["placement"]) == ("web", 5, {"one": 5})
    assert (consul.kv_get(f"{prefix}resources/web"),
            consul.kv_get(f"{prefix}placements/web")) == stored
    unchanged = leading.request("POST", "/service/web/scale?dry_run=1", {"number": 2}).json()
    assert (unchanged["orders"], unchanged["index"]) == ([], plan["index"])
    new = leading.request("POST", "/service/new/scale?dry_run=1", {"number": 1}).json()
    assert (new["orders"], new["index"]) == ([{"compute": "one", "from": 0, "to": 1}], 0)


def test_a_scale_with_a_stale_index_is_refused(leading, counting, consul, prefix):
    scaled(leading, counting, "web", 2)
    index = leading.request("POST", "/service/web/scale?dry_run=1", {"number": 4}).json()["index"]
    assert leading.request("POST", "/service/web/scale", {"number": 3}).status_code == 202
    stale = leading.request("POST", "/service/web/scale", {"number": 4},
                            headers={"If-Match": f'"{index}"'})
    assert stale.status_code == 412
    assert stale.json()["error"].startswith(f"service 'web' changed since index {index}")
    assert consul.kv_get(f"{prefix}resources/web") == b"3"
    index = leading.request("POST", "/service/web/scale?dry_run=1", {"number": 4}).json()["index"]
    applied = leading.request("POST", f"/service/web/scale?index={index}", {"number": 4})
    assert applied.status_code == 202
    assert consul.kv_get(f"{prefix}resources/web") == b"4"
    # Index 0: only if the service does not exist yet.
    assert leading.request("POST", "/service/web/scale", {"number": 1},
                           headers={"If-Match": "0"}).status_code == 412
    assert leading.request("POST", "/service/other/scale", {"number": 1},
                           headers={"If-Match": "0"}).status_code == 202


def test_keys_of_a_service_whose_total_another_tool_removed_are_cleaned_up(
        leading, counting, consul, prefix):
    scaled(leading, counting, "web", 1)
    wait_until(lambda: consul.kv_get(f"{prefix}events/web"), what="web's history")
    consul.kv_put(f"{prefix}status/ghost", '{"observed": {}}')
    assert requests.delete(f"{consul.url}/v1/kv/{prefix}resources/web", timeout=5).ok
    wait_until(lambda: not [key for key in consul.kv_keys(prefix) if key.endswith(
        ("/web", "/ghost")) and "/changes/" not in key], what="the keys cleaned up")
    assert leading.request("GET", "/service/web").status_code == 404


@pytest.mark.parametrize("method,path,body,status,message", [
    ("DELETE", "/service/ghost", None, 404, "'ghost' is not known"),
    ("POST", "/service/ghost/pause", None, 404, "'ghost' is not known"),
    ("POST", "/service/ghost/resume", None, 404, "'ghost' is not known"),
    ("POST", "/service/a%2Fb/pause", None, 400, "service name"),
    ("POST", "/service/web/scale?index=x", {"number": 1}, 400, "the index must be a number"),
    ("POST", "/service/web/scale?dry_run=1", {"number": -1}, 400, "must be >= 0"),
])
def test_bad_lifecycle_requests_change_nothing(replica, consul, prefix, method, path, body,
                                               status, message):
    replica.request("POST", "/compute", {"name": "one", "connector": NOWHERE})
    response = replica.request(method, path, body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert [k for k in consul.kv_keys(prefix) if "/computes/" not in k
            and "/connectors/" not in k and "/changes/computes/" not in k
            and not k.endswith(("leader", "term"))] == []


def test_a_read_token_sees_the_history_but_cannot_change_the_lifecycle(start_replica):
    bootstrap = "bootstrap-" + "8" * 40
    secured = start_replica(env={"GENISYS_BOOTSTRAP_TOKEN": bootstrap})
    admin = {"Authorization": f"Bearer {bootstrap}"}
    secured.request("POST", "/compute", {"name": "one", "connector": NOWHERE}, headers=admin)
    assert secured.request("POST", "/service/web/scale", {"number": 1},
                           headers=admin).status_code == 202
    reader = secured.request("POST", "/token", {"name": "r", "role": "read"},
                             headers=admin).json()["secret"]
    read = {"Authorization": f"Bearer {reader}"}
    for path in ("/events", "/service/web/events"):
        assert secured.request("GET", path, headers=read).status_code == 200
    for method, path in (("DELETE", "/service/web"), ("POST", "/service/web/pause"),
                         ("POST", "/service/web/resume"),
                         ("POST", "/service/web/scale?dry_run=1")):
        refused = secured.request(method, path, {"number": 1} if "scale" in path else None,
                                  headers=read)
        assert refused.status_code == 403, (method, path)
    record = secured.request("GET", "/service/web", headers=read).json()
    assert (record["state"], record["paused"]) == ("active", False)
