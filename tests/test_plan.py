"""The reconciler's pure decisions."""

from genisys.plan import Desired, Observed, ScaleOrder, placements_to_fix, scale_orders

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
