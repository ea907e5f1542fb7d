"""The reconciler's pure decisions."""

from genisys.placement import ComputeSpec
from genisys.plan import (
    Desired,
    Observed,
    ScaleOrder,
    decide,
    placed_whole,
    placements_to_fix,
    scale_orders,
)

COMPUTES = {"a": "http://a:1", "b": "http://b:1"}


def test_a_matching_placement_needs_no_fix():
    desired = Desired(COMPUTES, {"web": 3}, {"web": {"a": 1, "b": 2}})
    assert placements_to_fix(desired, "first") == {}


def test_a_total_changed_alone_is_placed_by_the_strategy():
    desired = Desired(COMPUTES, {"web": 4, "api": 4}, {"web": {"b": 1}})
    assert placements_to_fix(desired, "first") == {"web": {"a": 3, "b": 1}, "api": {"a": 4}}
    assert placements_to_fix(desired, "spread") == {"web": {"a": 2, "b": 2},
                                                    "api": {"a": 2, "b": 2}}


def test_a_placement_on_a_deleted_compute_is_moved():
    desired = Desired(COMPUTES, {"web": 3}, {"web": {"gone": 2, "b": 1}})
    assert placements_to_fix(desired, "first") == {"web": {"a": 2, "b": 1}}


def test_no_compute_means_no_fix_rather_than_a_crash():
    desired = Desired({}, {"web": 3}, {})
    assert placements_to_fix(desired, "first") == {}


def test_placed_whole_needs_the_whole_total_on_defined_computes_within_their_max():
    specs = {"a": ComputeSpec(max=2)}
    desired = Desired(COMPUTES, {"web": 3, "api": 4, "db": 2, "old": 1, "big": 3},
                      {"web": {"a": 1, "b": 2}, "api": {"a": 1}, "old": {"gone": 1},
                       "big": {"a": 3}}, specs=specs)
    assert [s for s in desired.totals if placed_whole(desired, s)] == ["web"]


def test_orders_only_where_observed_differs():
    desired = Desired(COMPUTES, {"web": 3}, {"web": {"a": 1, "b": 2}})
    observed = Observed(counts={("web", "a"): 1, ("web", "b"): 0})
    assert scale_orders(desired, observed) == [ScaleOrder("web", "b", 2, 0)]


def test_computes_outside_the_placement_are_scaled_to_zero():
    desired = Desired(COMPUTES, {"web": 2}, {"web": {"a": 2}})
    observed = Observed(counts={("web", "a"): 2, ("web", "b"): 1})
    assert scale_orders(desired, observed) == [ScaleOrder("web", "b", 0, 1)]


def test_unknown_counts_are_never_acted_on():
    desired = Desired(COMPUTES, {"web": 2}, {"web": {"a": 1, "b": 1}})
    observed = Observed(counts={("web", "a"): 0}, errors={("web", "b"): "down"})
    assert scale_orders(desired, observed) == [ScaleOrder("web", "a", 1, 0)]


def test_services_without_a_desired_total_are_never_touched():
    desired = Desired(COMPUTES, {}, {})
    observed = Observed(counts={("legacy", "a"): 5})
    assert scale_orders(desired, observed) == []


def test_planning_again_after_acting_orders_nothing():
    desired = Desired(COMPUTES, {"web": 3}, {"web": {"a": 1, "b": 2}})
    observed = Observed(counts={("web", "a"): 0, ("web", "b"): 5})
    for order in scale_orders(desired, observed):
        observed.counts[order.service, order.compute] = order.number
    assert scale_orders(desired, observed) == []


def test_an_order_in_progress_towards_the_placement_is_awaited_not_sent_again():
    desired = Desired(COMPUTES, {"web": 3}, {"web": {"a": 3}})
    in_progress = Observed({("web", "a"): 1, ("web", "b"): 0}, targets={("web", "a"): 3})
    assert scale_orders(desired, in_progress) == []
    # Working towards another number (the placement moved on): ordered at once.
    moved = Observed({("web", "a"): 1, ("web", "b"): 0}, targets={("web", "a"): 5})
    assert scale_orders(desired, moved) == [ScaleOrder("web", "a", 3, 1)]
    # At the placed count but still working away from it (x=3 then x=0): ordered.
    back = Desired(COMPUTES, {"web": 0}, {"web": {}})
    assert scale_orders(back, Observed({("web", "a"): 0}, targets={("web", "a"): 3})) == [
        ScaleOrder("web", "a", 0, 0)]


def test_decide_returns_the_orders_and_one_sentence_saying_why():
    desired = Desired(COMPUTES, {"web": 3, "api": 1}, {"web": {"a": 3}, "api": {"b": 1}},
                      paused=frozenset({"api"}))
    observed = Observed({("web", "a"): 1, ("api", "b"): 0})
    decision = decide(desired, observed)
    assert decision.orders == [ScaleOrder("web", "a", 3, 1)]
    assert decision.sentence == "1 order(s): web on a: placement 3, observed 1"
    waiting = decide(desired, Observed({("web", "a"): 1, ("api", "b"): 0},
                                       targets={("web", "a"): 3}))
    assert waiting.orders == []
    assert waiting.sentence == ("no order for 2 service(s) observed; awaiting orders in "
                                "progress: web on a to 3; paused: api")
