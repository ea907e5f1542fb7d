"""Unit and property tests for genisys.placement (DESIGN section 6)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genisys.placement import STRATEGIES, NoComputeError, place, placement_total

ABC = ["a", "b", "c"]


# --- explicit compute -------------------------------------------------------

def test_explicit_compute_growth_goes_to_that_compute():
    assert place(6, ABC, {"a": 1, "c": 2}, compute="b") == {"a": 1, "b": 3, "c": 2}


def test_explicit_compute_growth_from_empty():
    assert place(4, ABC, {}, compute="c") == {"c": 4}


def test_explicit_compute_shrink_takes_from_it_first():
    assert place(4, ABC, {"a": 2, "b": 3, "c": 1}, compute="b") == {"a": 2, "b": 1, "c": 1}


def test_explicit_compute_shrink_then_newest_first():
    # b gives its 3, then c (newest) its 1, then a gives 1.
    assert place(1, ABC, {"a": 2, "b": 3, "c": 1}, compute="b") == {"a": 1}


def test_explicit_compute_shrink_when_it_holds_nothing():
    assert place(3, ABC, {"a": 2, "b": 2}, compute="c") == {"a": 2, "b": 1}


def test_explicit_compute_same_total_keeps_placement():
    assert place(5, ABC, {"a": 2, "c": 3}, compute="b") == {"a": 2, "c": 3}


def test_explicit_compute_overrides_spread_strategy():
    assert place(3, ABC, {}, strategy="spread", compute="c") == {"c": 3}


def test_unknown_compute_is_rejected():
    with pytest.raises(ValueError):
        place(3, ABC, {}, compute="z")


def test_unknown_compute_is_rejected_even_for_zero():
    with pytest.raises(ValueError):
        place(0, ABC, {}, compute="z")


# --- strategy "first" -------------------------------------------------------

def test_first_places_on_first_compute():
    assert place(3, ABC, {}) == {"a": 3}
    assert place(3, ABC, {}, strategy="first") == {"a": 3}


def test_first_is_same_as_compute_first():
    current = {"a": 1, "b": 4, "c": 2}
    for total in range(0, 12):
        assert place(total, ABC, current) == place(total, ABC, current, compute="a")


def test_first_grows_first_compute_keeps_others():
    assert place(7, ABC, {"b": 2, "c": 1}) == {"a": 4, "b": 2, "c": 1}


def test_first_shrinks_first_then_newest():
    assert place(2, ABC, {"a": 1, "b": 2, "c": 2}) == {"b": 2}


# --- strategy "spread" ------------------------------------------------------

@pytest.mark.parametrize("total, expected", [
    (5, {"a": 2, "b": 2, "c": 1}),
    (4, {"a": 2, "b": 1, "c": 1}),
    (6, {"a": 2, "b": 2, "c": 2}),
    (2, {"a": 1, "b": 1}),
    (1, {"a": 1}),
])
def test_spread_even_split_remainder_to_earliest(total, expected):
    result = place(total, ABC, {}, strategy="spread")
    assert result == expected
    assert list(result) == list(expected)


def test_spread_keeps_what_runs_and_adds_where_below_an_even_share():
    assert place(5, ABC, {"c": 5, "gone": 3}, strategy="spread") == {"c": 5}
    assert place(9, ABC, {"c": 5, "gone": 3}, strategy="spread") == {"a": 2, "b": 2, "c": 5}
    assert place(3, ABC, {"a": 2, "b": 2, "c": 5}, strategy="spread") == {"a": 1, "b": 1, "c": 1}


# --- deleted computes, zero, errors -----------------------------------------

def test_deleted_compute_is_moved_by_first():
    assert place(5, ABC, {"gone": 3, "b": 2}) == {"a": 3, "b": 2}


def test_deleted_compute_is_moved_to_explicit_compute():
    assert place(5, ABC, {"gone": 3, "b": 2}, compute="c") == {"b": 2, "c": 3}


def test_deleted_compute_with_shrink():
    assert place(1, ABC, {"gone": 3, "b": 2}) == {"b": 1}


def test_total_zero_is_empty():
    assert place(0, ABC, {"a": 3, "gone": 1}) == {}
    assert place(0, ABC, {}, strategy="spread") == {}
    assert place(0, ABC, {"b": 1}, compute="b") == {}


def test_total_zero_without_computes_is_empty():
    assert place(0, [], {"gone": 2}) == {}


def test_no_computes_raises():
    with pytest.raises(NoComputeError):
        place(1, [], {})
    with pytest.raises(NoComputeError):
        place(3, [], {"gone": 3}, strategy="spread")
    assert issubclass(NoComputeError, ValueError)


def test_unknown_strategy_raises():
    with pytest.raises(ValueError):
        place(3, ABC, {}, strategy="random")


def test_negative_total_raises():
    with pytest.raises(ValueError):
        place(-1, ABC, {})


def test_result_is_fresh_dict_in_definition_order():
    current = {"c": 1, "a": 1}
    result = place(2, ABC, current)
    assert result == current and result is not current
    assert list(result) == ["a", "c"]
    result["a"] = 99
    assert current == {"c": 1, "a": 1}


def test_placement_total():
    assert placement_total({}) == 0
    assert placement_total({"a": 2, "b": 3}) == 5


def test_strategies_constant():
    assert STRATEGIES == ("first", "spread", "weighted", "priority")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("compute", [None, "a", "b", "c"])
def test_idempotent(strategy, compute):
    current = {"a": 1, "b": 4, "gone": 2}
    for total in range(0, 15):
        once = place(total, ABC, current, strategy, compute)
        assert place(total, ABC, once, strategy, compute) == once


# --- properties -------------------------------------------------------------

names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)


@st.composite
def scenarios(draw):
    computes = draw(st.lists(names, unique=True, max_size=6))
    known = st.sampled_from(computes) if computes else st.nothing()
    keys = st.one_of(known, names) if computes else names
    current = draw(st.dictionaries(keys, st.integers(0, 1000), max_size=8))
    total = draw(st.integers(0, 1000))
    strategy = draw(st.sampled_from(STRATEGIES))
    compute = draw(st.one_of(st.none(), known)) if computes else None
    return total, computes, current, strategy, compute


@given(scenarios())
def test_property_valid_placement(scenario):
    total, computes, current, strategy, compute = scenario
    if total > 0 and not computes:
        with pytest.raises(NoComputeError):
            place(total, computes, current, strategy, compute)
        return
    result = place(total, computes, current, strategy, compute)
    assert placement_total(result) == total
    assert all(n > 0 for n in result.values())
    assert set(result) <= set(computes)
    assert list(result) == [c for c in computes if c in result]


@given(scenarios())
def test_property_idempotent(scenario):
    total, computes, current, strategy, compute = scenario
    if total > 0 and not computes:
        return
    once = place(total, computes, current, strategy, compute)
    assert place(total, computes, once, strategy, compute) == once


@given(scenarios())
def test_property_explicit_compute_moves_only_what_it_must(scenario):
    """Growth touches only C; shrink never grows anyone; kept computes never gain."""
    total, computes, current, strategy, compute = scenario
    if compute is None:
        return
    kept = {c: n for c, n in current.items() if c in computes and n > 0}
    result = place(total, computes, current, strategy, compute)
    for c in computes:
        if c != compute:
            assert result.get(c, 0) <= kept.get(c, 0)
    if total >= placement_total(kept):
        assert {c: n for c, n in result.items() if c != compute} == {
            c: n for c, n in kept.items() if c != compute}
