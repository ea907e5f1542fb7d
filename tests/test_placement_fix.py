"""placements_to_fix with compute limits: right is what the strategy gives within them."""

from genisys.placement import ComputeSpec
from genisys.plan import Desired, placements_to_fix

COMPUTES = {"a": "http://a:1", "b": "http://b:1"}
SMALL = {"a": ComputeSpec(max=2), "b": ComputeSpec(max=1)}


def test_a_short_service_that_cannot_grow_is_left_as_it_is():
    desired = Desired(COMPUTES, {"web": 5}, {"web": {"a": 2, "b": 1}}, specs=SMALL)
    for strategy in ("first", "spread", "weighted", "priority"):
        assert placements_to_fix(desired, strategy) == {}


def test_a_short_service_grows_when_a_max_is_raised():
    specs = {**SMALL, "b": ComputeSpec(max=4)}
    desired = Desired(COMPUTES, {"web": 5}, {"web": {"a": 2, "b": 1}}, specs=specs)
    assert placements_to_fix(desired, "priority") == {"web": {"a": 2, "b": 3}}


def test_a_placement_over_a_lowered_max_is_moved_within_the_limits():
    desired = Desired(COMPUTES, {"web": 4}, {"web": {"a": 4}}, specs=SMALL)
    assert placements_to_fix(desired, "first") == {"web": {"a": 2, "b": 1}}


def test_a_total_beyond_every_max_is_placed_as_far_as_it_fits():
    desired = Desired(COMPUTES, {"web": 9}, {}, specs=SMALL)
    assert placements_to_fix(desired, "weighted") == {"web": {"a": 2, "b": 1}}
