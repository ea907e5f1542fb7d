"""The warnings about connectors that accept orders but do not carry them out: pure."""

from genisys.plan import WARN_AFTER, Desired, Observed, open_orders, order_warnings

DESIRED = Desired(computes={"a": "http://a", "b": "http://b"}, totals={"web": 3},
                  placements={"web": {"a": 3}})


def observed(**counts):
    return Observed(counts={("web", c): n for c, n in counts.items()})


def test_a_pair_that_keeps_reporting_another_count_is_warned_after_enough_orders():
    for accepted in range(1, WARN_AFTER):
        assert order_warnings({("web", "a"): (3, accepted)}, observed(a=1)) == {}
    assert order_warnings({("web", "a"): (3, 4)}, observed(a=1)) == {
        ("web", "a"): "ordered 3, still reports 1 after 4 orders"}


def test_a_count_beyond_what_was_placed_is_warned_as_such():
    assert order_warnings({("web", "a"): (3, WARN_AFTER)}, observed(a=1_000_000_000)) == {
        ("web", "a"): "reports 1000000000 running, more than the 3 placed"}


def test_no_warning_when_the_count_is_unknown_or_right():
    orders = {("web", "a"): (3, 9)}
    assert order_warnings(orders, observed()) == {}
    assert order_warnings(orders, observed(a=3)) == {}


def test_orders_close_when_the_pair_reports_what_is_placed_or_the_placement_moves_on():
    orders = {("web", "a"): (3, 5), ("web", "b"): (2, 5), ("api", "a"): (1, 5)}
    # a reports 3 (placed): closed. b: placement moved on to 0: closed. api is not part of
    # this cycle: kept as it is.
    assert open_orders(orders, DESIRED, observed(a=3, b=0)) == {("api", "a"): (1, 5)}
    assert open_orders(orders, DESIRED, observed(a=1))[("web", "a")] == (3, 5)
