"""What the leader knows of each pair: when an order is in progress, and when it ends."""

from genisys.engine.calls import Observation
from genisys.engine.observations import FIRST_RECHECK, MAX_RECHECK, Observations
from genisys.plan import Desired

EVENT = {"time": "2026-11-25T16:00:00.000+00:00"}


def book() -> Observations:
    return Observations(lambda: None)


def observe(observations, counts, targets=None, per_service=True, reports_targets=True,
            poll_interval=15.0):
    observations.observed("a", Observation(counts, {}, targets or {}, per_service),
                          per_service=per_service, reports_targets=reports_targets,
                          poll_interval=poll_interval)


def test_an_order_in_progress_ends_when_the_count_reaches_it():
    observations = book()
    observations.order_in_progress("web", "a", 3, EVENT)
    assert observations.view("a", {"web"}).targets == {("web", "a"): 3}
    observe(observations, {"web": 1}, {"web": 3})
    assert observations.status("web", ["a"])["in_progress"] == {
        "a": {"to": 3, "since": EVENT["time"]}}
    observe(observations, {"web": 3})
    assert observations.status("web", ["a"]) == {
        "observed": {"a": 3}, "errors": {}, "warnings": {}, "in_progress": {}}


def test_a_connector_that_names_no_target_any_more_is_not_working_on_it():
    observations = book()
    observations.order_in_progress("web", "a", 3, EVENT)
    observe(observations, {"web": 1}, per_service=False)  # a bulk answer names no targets
    assert ("web", "a") in observations.in_progress
    observe(observations, {"web": 1})  # the connector reports targets, and names none
    assert observations.in_progress == {}


def test_without_targets_an_order_is_awaited_for_poll_interval():
    observations = book()
    observations.order_in_progress("web", "a", 3, EVENT)
    observe(observations, {"web": 1}, reports_targets=False)
    assert ("web", "a") in observations.in_progress
    observe(observations, {"web": 1}, reports_targets=False, poll_interval=0.0)
    assert observations.in_progress == {}


def test_a_target_reported_by_the_connector_is_an_order_in_progress():
    observations = book()
    observe(observations, {"web": 0}, {"web": 2})  # another leader's order, say
    assert observations.view("a", {"web"}).targets == {("web", "a"): 2}


def test_re_observations_back_off():
    observations = book()
    observations.order_in_progress("web", "a", 3, EVENT)
    delays = [observations.next_recheck("web", "a") for _ in range(6)]
    assert delays == [FIRST_RECHECK, 1.0, 2.0, MAX_RECHECK, MAX_RECHECK, MAX_RECHECK]
    assert observations.next_recheck("api", "a") is None


def test_a_pair_that_ignores_its_orders_is_warned_about_after_observations():
    observations = book()
    desired = Desired({"a": "http://a:1"}, {"web": 3}, {"web": {"a": 3}})
    for _ in range(3):
        observe(observations, {"web": 0})
        observations.settle("a", {"web"}, desired)
        observations.accepted_order("web", "a", 3, 3, EVENT)  # "done", it says
    assert observations.status("web", ["a"])["warnings"] == {}
    observe(observations, {"web": 0})
    observations.settle("a", {"web"}, desired)
    assert observations.status("web", ["a"])["warnings"] == {
        "a": "ordered 3, still reports 0 after 3 orders"}


def test_only_a_change_marks_a_service_dirty():
    observations = book()
    observe(observations, {"web": 1, "api": 2})
    assert observations.take_dirty(10) == ({"web", "api"}, [])
    observe(observations, {"web": 1, "api": 3})
    assert observations.take_dirty(10) == ({"api"}, [])
    observations.observed("a", Observation({}, {"web": "down."}), per_service=True,
                          reports_targets=True, poll_interval=15.0)
    observations.observed("a", Observation({}, {"web": "down."}), per_service=True,
                          reports_targets=True, poll_interval=15.0)
    assert observations.take_dirty(10) == ({"web"}, [])


def test_status_records_are_taken_a_slice_at_a_time_with_their_own_events():
    observations = book()
    for service in ("a1", "a2", "a3"):
        observations.note(service, {**EVENT, "service": service, "to": 1})
    observations.note("a1", {**EVENT, "service": "a1", "to": 2})
    first, events = observations.take_dirty(2)
    assert len(first) == 2
    assert sorted((e["service"], e["to"]) for e in events) == sorted(
        (s, n) for s, n in (("a1", 1), ("a1", 2), ("a2", 1), ("a3", 1)) if s in first)
    observations.put_back(first, events)  # the write failed: all of it again
    taken, again = observations.take_dirty(10)
    assert taken == {"a1", "a2", "a3"}
    assert [e["to"] for e in again if e["service"] == "a1"] == [1, 2]  # oldest first
    assert observations.take_dirty(10) == (set(), [])
