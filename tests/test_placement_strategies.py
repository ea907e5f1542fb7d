"""The `weighted` and `priority` strategies, and `max` under every strategy, by example:
each names the hole of another system it closes."""

from collections import Counter

import pytest

from genisys.config import ConfigError, build
from genisys.placement import STRATEGIES, ComputeSpec, place, placement_total

AB, ABC = ["a", "b"], ["a", "b", "c"]
ONE_TO_THREE = {"a": ComputeSpec(weight=1), "b": ComputeSpec(weight=3)}


def weighted(total, current, specs=ONE_TO_THREE, computes=AB, **kwargs):
    return place(total, computes, current, "weighted", specs=specs, **kwargs)


def test_weighted_splits_by_weight():
    assert weighted(8, {}) == {"a": 2, "b": 6}
    assert weighted(4, {}) == {"a": 1, "b": 3}


def test_weighted_scale_up_only_adds_where_a_compute_is_below_its_share():
    # Karmada #6735: a scale-up re-split from scratch shrank a healthy cluster.
    assert weighted(8, {"a": 3, "b": 3}) == {"a": 3, "b": 5}


def test_weighted_scale_down_only_removes_where_a_compute_is_above_its_share():
    assert weighted(4, {"a": 3, "b": 5}) == {"a": 1, "b": 3}


def test_equal_remainders_do_not_follow_name_order():
    # Karmada #4220: equal remainders went to the first names; here each service breaks
    # the tie its own way.
    equal = dict.fromkeys(ABC, ComputeSpec())
    for strategy in ("spread", "weighted"):
        firsts = Counter(next(iter(place(1, ABC, {}, strategy, specs=equal, service=f"s{i}")))
                         for i in range(600))
        assert all(150 <= firsts[c] <= 250 for c in ABC), (strategy, firsts)


def test_the_largest_remainder_wins_so_a_small_weight_is_not_starved():
    # Karmada #6424: weights 2 and 1, 2 replicas: all went to the heavy cluster.
    specs = {"a": ComputeSpec(weight=2), "b": ComputeSpec(weight=1)}
    for i in range(50):
        assert weighted(2, {}, specs, service=f"s{i}") == {"a": 1, "b": 1}


def test_weighted_respects_max_and_gives_the_rest_to_the_others():
    specs = {"a": ComputeSpec(weight=3, max=2), "b": ComputeSpec(weight=1)}
    assert weighted(8, {}, specs) == {"a": 2, "b": 6}


def test_weight_zero_takes_nothing_unless_named():
    specs = {"a": ComputeSpec(weight=0), "b": ComputeSpec(weight=0)}
    assert weighted(3, {}, specs) == {}
    assert weighted(3, {}, specs, compute="a") == {"a": 3}


def test_a_scale_down_empties_weight_zero_computes_first():
    specs = {"a": ComputeSpec(weight=0), "b": ComputeSpec(weight=1)}
    assert weighted(2, {"a": 2, "b": 2}, specs) == {"b": 2}


def test_priority_fills_the_highest_first_and_falls_through_on_max():
    # cluster-autoscaler #4142: its priority expander did not fall through on capacity.
    specs = {"a": ComputeSpec(priority=0), "b": ComputeSpec(priority=10, max=2),
             "c": ComputeSpec(priority=5)}
    assert place(6, ABC, {}, "priority", specs=specs) == {"b": 2, "c": 4}


def test_priority_shrinks_the_lowest_first():
    specs = {"a": ComputeSpec(priority=0), "b": ComputeSpec(priority=10, max=2),
             "c": ComputeSpec(priority=5)}
    assert place(3, ABC, {"a": 1, "b": 2, "c": 4}, "priority", specs=specs) == {"b": 2, "c": 1}


def test_priority_ties_go_in_definition_order():
    assert place(3, ABC, {}, "priority", specs={"a": ComputeSpec(max=1)}) == {"a": 1, "b": 2}


def test_what_does_not_fit_is_left_out_as_the_shortfall():
    specs = {"a": ComputeSpec(max=3), "b": ComputeSpec(max=4)}
    for strategy in ("first", "spread", "weighted", "priority"):
        result = place(10, AB, {}, strategy, specs=specs)
        assert result == {"a": 3, "b": 4} and 10 - placement_total(result) == 3


def test_first_falls_through_in_definition_order_on_max():
    specs = {"a": ComputeSpec(max=2), "b": ComputeSpec(max=1)}
    assert place(5, ABC, {}, "first", specs=specs) == {"a": 2, "b": 1, "c": 2}


def test_a_lowered_max_moves_the_surplus_by_the_strategy():
    specs = {"a": ComputeSpec(max=3)}
    assert place(5, ABC, {"a": 5}, "first", specs=specs) == {"a": 3, "b": 2}
    assert place(2, AB, {"a": 2}, "first", specs={"a": ComputeSpec(max=0)}) == {"b": 2}


def test_a_named_compute_takes_what_fits_and_the_strategy_places_the_rest():
    specs = {"c": ComputeSpec(max=2)}
    assert place(6, ABC, {"a": 1}, "first", compute="c", specs=specs) == {"a": 4, "c": 2}
    assert place(6, ABC, {"a": 1}, "spread", compute="c", specs=specs) == {"a": 2, "b": 2, "c": 2}


def test_the_configuration_takes_every_strategy_and_names_them_when_refusing():
    for strategy in STRATEGIES:
        assert build({"placement": {"strategy": strategy}}).placement.strategy == strategy
    with pytest.raises(ConfigError, match="is not one of first, spread, weighted, priority"):
        build({"placement": {"strategy": "random"}})
