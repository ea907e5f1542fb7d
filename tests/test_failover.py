"""Unit and property tests for genisys.failover: a dead compute's share, and its return."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from genisys import config
from genisys.failover import Health, Policy, decide, policy, settled, track
from genisys.placement import STRATEGIES, ComputeSpec, place, placement_total, within_limits
from genisys.plan import Desired, Observed

ABC = ["a", "b", "c"]
POLICY = Policy(failover_after=60, failback_after=30, step=2)
UP = Health(healthy_since=0)


def desired(placements: dict[str, dict[str, int]], computes=ABC, **kwargs) -> Desired:
    return Desired({c: f"http://{c}" for c in computes},
                   {s: placement_total(p) for s, p in placements.items()}, placements, **kwargs)


def down(since: float) -> Health:
    return Health(failing_since=since)


# --- health ------------------------------------------------------------------------

def test_health_from_failing_since_samples():
    failing = track(None, 10, 20)
    assert failing == Health(failing_since=10)
    assert track(failing, None, 30) == Health(healthy_since=30)
    assert track(track(failing, None, 30), None, 40) == Health(healthy_since=30)
    assert track(Health(healthy_since=30), 45, 50) == Health(failing_since=45)


# --- failover ----------------------------------------------------------------------

def test_nothing_moves_before_failover_after():
    state = desired({"web": {"a": 2, "b": 2}})
    decision = decide(state, {"a": UP, "b": down(100), "c": UP}, {}, {"web"}, "spread",
                      POLICY, now=159)
    assert (decision.placements, decision.records, decision.moves) == ({}, {}, [])


def test_a_dead_compute_share_moves_by_the_strategy_and_is_recorded():
    state = desired({"web": {"a": 2, "b": 2, "c": 2}})
    decision = decide(state, {"a": UP, "b": down(100), "c": UP}, {}, {"web"}, "spread",
                      POLICY, now=160)
    assert decision.placements == {"web": {"a": 3, "c": 3}}
    assert decision.records == {"web": {"b": 2}}
    [move] = decision.moves
    assert (move.service, move.compute, move.before, move.after) == ("web", "b", 2, 0)
    assert move.sentence == "compute b dead for 60s: 2 of web moved to a (+1), c (+1)"


def test_first_strategy_moves_to_the_first_healthy_compute():
    state = desired({"web": {"a": 4, "c": 1}})
    decision = decide(state, {"a": down(0), "b": UP, "c": UP}, {}, set(), "first", POLICY,
                      now=60)
    assert decision.placements == {"web": {"b": 4, "c": 1}}


def test_nothing_moves_to_a_compute_that_is_failing_too():
    # c fails for less than failover_after: it keeps its share and takes nothing new.
    state = desired({"web": {"a": 2, "b": 2, "c": 2}})
    decision = decide(state, {"a": UP, "b": down(0), "c": down(50)}, {}, set(), "spread",
                      POLICY, now=60)
    assert decision.placements == {"web": {"a": 4, "c": 2}}


def test_nothing_moves_to_a_compute_this_leader_has_not_heard_from():
    state = desired({"web": {"b": 2}})
    decision = decide(state, {"a": UP, "b": down(0)}, {}, set(), "spread", POLICY, now=60)
    assert decision.placements == {"web": {"a": 2}}


def test_with_every_compute_failing_nothing_moves():
    state = desired({"web": {"a": 1, "b": 2}})
    decision = decide(state, {"a": down(0), "b": down(0), "c": down(0)}, {}, set(), "spread",
                      POLICY, now=100)
    assert (decision.placements, decision.moves) == ({}, [])


def test_paused_and_deleting_services_are_left_alone():
    state = desired({"web": {"b": 2}, "api": {"b": 1}}, paused=frozenset({"web"}),
                    deleting=frozenset({"api"}))
    decision = decide(state, {"a": UP, "b": down(0)}, {}, set(), "first", POLICY, now=60)
    assert decision.placements == {}


def test_a_placement_on_a_compute_no_longer_defined_is_left_to_the_placing():
    state = desired({"web": {"b": 2, "gone": 1}})
    decision = decide(state, {"a": UP, "b": down(0)}, {}, set(), "first", POLICY, now=60)
    assert decision.placements == {}


def test_what_does_not_fit_within_max_stays_on_the_dead_compute():
    state = desired({"web": {"a": 2, "b": 4}}, specs={"a": ComputeSpec(max=3)})
    decision = decide(state, {"a": UP, "b": down(0)}, {}, set(), "spread", POLICY, now=60)
    assert decision.placements == {"web": {"a": 3, "b": 3}}
    assert decision.records == {"web": {"b": 1}}
    assert [m.sentence for m in decision.moves] == [
        "compute b dead for 60s: 1 of web moved to a (+1), 3 stay (no room elsewhere)"]
    # Room appears nowhere: the next decision changes nothing, and says nothing.
    state = desired({"web": {"a": 3, "b": 3}}, specs={"a": ComputeSpec(max=3)})
    decision = decide(state, {"a": UP, "b": down(0)}, {"web": {"b": 1}}, set(), "spread",
                      POLICY, now=61)
    assert (decision.placements, decision.records, decision.moves) == ({}, {}, [])


def test_records_add_up_over_several_failovers():
    state = desired({"web": {"a": 1, "b": 3}})
    decision = decide(state, {"a": UP, "b": down(0), "c": UP}, {"web": {"b": 2}}, set(),
                      "first", POLICY, now=60)
    assert decision.records == {"web": {"b": 5}}


# --- the return ----------------------------------------------------------------------

def test_a_recovered_compute_takes_nothing_during_failback_after():
    state = desired({"web": {"a": 3, "c": 3}})
    health = {"a": UP, "b": Health(healthy_since=100), "c": UP}
    decision = decide(state, health, {"web": {"b": 2}}, {"web"}, "spread", POLICY, now=129)
    assert (decision.placements, decision.records, decision.moves) == ({}, {}, [])


def test_the_share_moves_back_in_bounded_steps_then_the_record_goes():
    state = desired({"web": {"a": 4, "c": 5}})
    health = {"a": UP, "b": Health(healthy_since=100), "c": UP}
    records = {"web": {"b": 3}}
    decision = decide(state, health, records, {"web"}, "spread", POLICY, now=130)
    assert decision.placements == {"web": {"a": 3, "b": 2, "c": 4}}  # a step of 2
    assert decision.records == {}  # not back yet
    assert [m.sentence for m in decision.moves] == [
        "compute b healthy for 30s: 2 of web moved back from a (+1), c (+1)"]
    state = desired({"web": {"a": 3, "b": 2, "c": 4}})
    decision = decide(state, health, records, {"web"}, "spread", POLICY, now=131)
    assert decision.placements == {"web": {"a": 3, "b": 3, "c": 3}}
    assert decision.records == {"web": {}}


def test_a_return_step_waits_until_the_previous_one_is_reported():
    state = desired({"web": {"a": 4, "b": 2, "c": 3}})
    health = {"a": UP, "b": Health(healthy_since=0), "c": UP}
    decision = decide(state, health, {"web": {"b": 3}}, set(), "spread", POLICY, now=100)
    assert decision.placements == {}


def test_a_record_of_a_deleted_compute_is_dropped():
    state = desired({"web": {"a": 2}}, computes=["a"])
    decision = decide(state, {"a": UP}, {"web": {"gone": 2}}, {"web"}, "first", POLICY, now=1)
    assert decision.records == {"web": {}}


def test_first_strategy_returns_to_the_first_compute():
    state = desired({"web": {"b": 4}})
    health = {"a": Health(healthy_since=0), "b": UP}
    decision = decide(state, health, {"web": {"a": 4}}, {"web"}, "first",
                      Policy(60, 30, step=10), now=30)
    assert decision.placements == {"web": {"a": 4}}
    assert decision.records == {"web": {}}


def test_settled_services_report_their_placement_where_they_answer():
    state = desired({"web": {"a": 2, "b": 1}, "api": {"a": 1}, "db": {"c": 1}})
    observed = Observed(counts={("web", "a"): 2, ("web", "c"): 0, ("api", "a"): 0},
                        errors={("web", "b"): "unreachable"})
    assert settled(state, observed) == {"web", "db"}


# --- configuration -----------------------------------------------------------------

def test_failover_is_off_by_default_and_failback_after_defaults_to_failover_after():
    assert policy(config.load(None, environ={}).placement) is None
    section = config.build({"placement": {"failover_after": "1m"}}, environ={}).placement
    assert policy(section) == Policy(60, 60, 1)
    section = config.build({"placement": {"failover_after": "2s", "failback_after": "500ms",
                                          "failback_step": 3}}, environ={}).placement
    assert policy(section) == Policy(2, 0.5, 3)


def test_bad_failover_settings_are_refused_naming_the_key():
    for raw, words in (({"failover_after": "soon"}, "placement.failover_after: 'soon' is not "
                        "a duration"),
                       ({"failback_step": 0}, "placement.failback_step must be at least 1")):
        try:
            config.build({"placement": raw}, environ={})
        except config.ConfigError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(f"{raw} was accepted")


# --- properties ----------------------------------------------------------------------

COMPUTES = ["a", "b", "c", "d", "e"]


@st.composite
def scenarios(draw):
    """Computes with random weights, max and priorities, a strategy, services placed
    freshly over all the computes, one compute that dies, and a return step."""
    computes = COMPUTES[:draw(st.integers(2, 5))]
    specs = {c: ComputeSpec(weight=draw(st.integers(0, 4)),
                            max=draw(st.none() | st.integers(0, 15)),
                            priority=draw(st.integers(0, 3))) for c in computes}
    strategy = draw(st.sampled_from(STRATEGIES))
    totals = draw(st.dictionaries(st.sampled_from(["web", "api", "db"]), st.integers(0, 40),
                                  min_size=1))
    placements = {s: place(t, computes, {}, strategy, specs=specs, service=s)
                  for s, t in totals.items()}
    state = Desired({c: f"http://{c}" for c in computes}, totals, placements, specs=specs)
    return state, strategy, draw(st.sampled_from(computes)), draw(st.integers(1, 7))


def run_until_returned(state: Desired, health, records, strategy, step, now):
    """Apply return steps (every step reported at once) until nothing changes."""
    for _ in range(200):
        decision = decide(state, health, records, set(state.totals), strategy,
                          Policy(60, 30, step), now)
        for service, new in decision.placements.items():
            old = state.placements[service]
            moved = sum(max(0, new.get(c, 0) - old.get(c, 0)) for c in new)
            assert moved <= step, "a return step moves at most `step` instances"
            assert placement_total(new) == placement_total(old)
            assert within_limits(new, state.specs)
        records = {**records, **decision.records}
        if not decision.placements:
            return state, records
        state = replace(state, placements={**state.placements, **decision.placements})
    raise AssertionError("the return did not converge")


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.floats(0, 59.9))
def test_property_nothing_moves_on_a_failure_shorter_than_failover_after(scenario, age):
    state, strategy, dead, _ = scenario
    health = {c: UP for c in state.computes} | {dead: down(1000 - age)}
    decision = decide(state, health, {}, set(state.totals), strategy, POLICY, now=1000)
    assert (decision.placements, decision.records, decision.moves) == ({}, {}, [])


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.data())
def test_property_failover_keeps_totals_within_limits_and_never_uses_failing_computes(
        scenario, data):
    state, strategy, dead, _ = scenario
    shaky = data.draw(st.sets(st.sampled_from([c for c in state.computes if c != dead])))
    health = {c: UP for c in state.computes} | {dead: down(0)} | {c: down(50) for c in shaky}
    decision = decide(state, health, {}, set(), strategy, POLICY, now=60)
    for service, new in decision.placements.items():
        old = state.placements[service]
        # Nothing dropped: what does not fit elsewhere stays on the dead compute.
        assert placement_total(new) == placement_total(old)
        assert within_limits(new, state.specs)
        assert new.get(dead, 0) < old.get(dead, 0)
        for compute in shaky:
            assert new.get(compute, 0) == old.get(compute, 0)
    for move in decision.moves:
        old, new = state.placements[move.service], decision.placements[move.service]
        assert (move.compute, move.before, move.after) == (dead, old[dead], new.get(dead, 0))
        assert decision.records[move.service] == {dead: move.before - move.after}
    assert decision.records.keys() == decision.placements.keys()


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_property_failover_then_return_converges_to_the_fresh_placement(scenario):
    state, strategy, dead, step = scenario
    health = {c: UP for c in state.computes} | {dead: down(0)}
    decision = decide(state, health, {}, set(), strategy, POLICY, now=60)
    moved = replace(state, placements={**state.placements, **decision.placements})
    records = decision.records
    # The compute answers again: it takes nothing before failback_after...
    health[dead] = Health(healthy_since=100)
    early = decide(moved, health, records, set(state.totals), strategy, POLICY, now=129)
    assert early.placements == {}
    # ...then its share comes back in bounded steps, to what a fresh placement gives.
    back, records = run_until_returned(moved, health, records, strategy, step, now=130)
    assert back.placements == state.placements
    assert all(dead not in record for record in records.values())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_only_answering_computes_past_their_hysteresis_gain(data):
    computes = COMPUTES[:data.draw(st.integers(1, 5))]
    strategy = data.draw(st.sampled_from(STRATEGIES))
    states = {c: data.draw(st.sampled_from(["up", "back", "shaky", "dead", "unknown"]))
              for c in computes}
    health = {c: {"up": UP, "back": Health(healthy_since=90), "shaky": down(50),
                  "dead": down(0)}[s] for c, s in states.items() if s != "unknown"}
    placements = data.draw(st.dictionaries(
        st.sampled_from(["web", "api"]),
        st.dictionaries(st.sampled_from(computes), st.integers(1, 9)), min_size=1))
    records = data.draw(st.dictionaries(st.sampled_from(["web", "api"]), st.dictionaries(
        st.sampled_from(computes), st.integers(1, 9))))
    settled_now = data.draw(st.sets(st.sampled_from(["web", "api"])))
    decision = decide(desired(placements, computes), health, records, settled_now, strategy,
                      POLICY, now=100)
    away = {c for record in records.values() for c in record}
    eligible = {c for c, s in states.items() if s == "up" or s == "back" and c not in away}
    for service, new in decision.placements.items():
        old = placements[service]
        assert placement_total(new) == placement_total(old)
        for compute in computes:
            if new.get(compute, 0) > old.get(compute, 0):
                assert compute in eligible, (compute, states[compute])
            if states[compute] in ("shaky", "unknown") or states[compute] == "back" \
                    and compute in away:
                assert new.get(compute, 0) == old.get(compute, 0)
    assert len(decision.moves) == len({(m.service, m.compute) for m in decision.moves})
