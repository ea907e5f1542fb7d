"""Velocity limits, pure: what pace() lets through, when, and what the status says."""

from hypothesis import given, settings
from hypothesis import strategies as st

from genisys.plan import Desired, ScaleOrder, order_reason
from genisys.velocity import Limits, Steps, effective, pace, stored_overrides

T = 1_800_000_000.0  # a wall-clock time, seconds


def order(compute, observed, number, service="web"):
    return ScaleOrder(service, compute, number, observed)


def test_no_limits_let_every_order_through_and_record_nothing():
    orders = [order("a", 0, 10), order("b", 5, 1)]
    paced = pace(orders, Limits(), Steps(), T, running=5, desired=10)
    assert paced.orders == orders
    assert paced.steps == Steps()
    assert (paced.next_step, paced.status) == (None, None)


def test_max_step_clamps_each_pair_from_what_it_reported():
    paced = pace([order("a", 0, 10), order("b", 9, 1)], Limits(max_step=2), Steps(), T,
                 running=9, desired=11)
    assert [o.number for o in paced.orders] == [2, 7]
    assert paced.steps == Steps(up=T, down=T, up_to={"a": 2}, down_to={"b": 7})
    assert paced.next_step == T  # no cooldown: the next step as soon as these are seen
    assert paced.status.startswith("stepping: 9 of 11, next step down after ")


def test_an_order_within_max_step_is_sent_whole_and_leaves_nothing_pending():
    paced = pace([order("a", 4, 6)], Limits(max_step=2, up_cooldown=30), Steps(), T,
                 running=4, desired=6)
    assert [o.number for o in paced.orders] == [6]
    assert paced.steps == Steps(up=T, up_to={"a": 6})
    assert (paced.next_step, paced.status) == (None, None)


def test_a_step_up_holds_further_steps_up_but_not_down():
    limits = Limits(max_step=2, up_cooldown=30, down_cooldown=120)
    held = pace([order("a", 2, 6), order("b", 3, 0)], limits, Steps(up=T), T + 10,
                running=5, desired=6)
    assert [(o.compute, o.number) for o in held.orders] == [("b", 1)]
    assert held.steps == Steps(up=T, down=T + 10, down_to={"b": 1})
    assert held.next_step == T + 30
    assert held.status == ("stepping: 3 of 6, next step down after 2027-01-15T08:02:10.000"
                           "+00:00, up after 2027-01-15T08:00:30.000+00:00")


def test_the_cooldown_ends_exactly_at_its_time():
    limits = Limits(up_cooldown=30)
    assert pace([order("a", 0, 3)], limits, Steps(up=T), T + 29.999, 0, 3).orders == []
    assert pace([order("a", 0, 3)], limits, Steps(up=T), T + 30, 0, 3).orders == \
        [order("a", 0, 3)]


def test_a_step_time_ahead_of_this_clock_counts_as_now():
    # Recorded by a replica whose clock is a day ahead: the wait is still the cooldown.
    limits = Limits(up_cooldown=60)
    paced = pace([order("a", 2, 6)], limits, Steps(up=T + 86400), T, 2, 6)
    assert (paced.orders, paced.next_step, paced.steps) == ([], T + 60, Steps(up=T))
    assert pace([order("a", 2, 6)], limits, paced.steps, T + 60, 2, 6).orders == \
        [order("a", 2, 6)]


def test_a_step_held_by_its_cooldown_says_when_it_goes():
    paced = pace([order("a", 2, 6)], Limits(up_cooldown=60), Steps(up=T), T + 1, 2, 6)
    assert paced.orders == []
    assert paced.next_step == T + 60
    assert paced.status == "stepping: 2 of 6, next step up after 2027-01-15T08:01:00.000+00:00"


def test_within_a_cooldown_the_computes_of_the_last_step_still_get_their_part():
    # Another compute's worker took the step at T; this one gets to it at T + 1.
    steps = Steps(up=T, up_to={"a": 2, "b": 3})
    limits = Limits(max_step=2, up_cooldown=30)
    paced = pace([order("b", 1, 9), order("c", 0, 4)], limits, steps, T + 1, 3, 15)
    assert [(o.compute, o.number) for o in paced.orders] == [("b", 3)]
    assert paced.steps == steps  # no new step: the one at T goes on
    assert paced.next_step == T + 30
    # b reports its part: nothing more for it until the cooldown ends
    assert pace([order("b", 3, 9)], limits, steps, T + 2, 5, 15).orders == []


def test_the_history_says_an_order_is_a_step():
    desired = Desired({"a": "http://a"}, {"web": 6}, {"web": {"a": 6}})
    assert order_reason(desired, order("a", 0, 2)) == \
        "placement 6, observed 0: a step of the velocity limits"
    assert order_reason(desired, order("a", 4, 6)) == "placement 6, observed 4"


def test_steps_round_trip_through_their_stored_form_and_junk_counts_as_never():
    steps = Steps(up=T + 0.25, up_to={"a": 2})
    assert steps.to_dict() == {"up": "2027-01-15T08:00:00.250+00:00", "up_to": {"a": 2}}
    assert Steps.from_dict(steps.to_dict()) == steps
    assert Steps.from_dict({"up": "yesterday", "down": 3}) == Steps()
    assert Steps.from_dict({"down": "2027-01-15T08:00:00Z", "down_to": {"a": "x"}}) == \
        Steps(down=T)
    assert Steps.from_dict(None) == Steps()


def test_effective_limits_say_where_each_comes_from():
    limits, sources = effective(Limits(max_step=5, up_cooldown=10), {"max_step": None,
                                                                    "down_cooldown": 60.0})
    assert limits == Limits(max_step=None, up_cooldown=10, down_cooldown=60)
    assert sources == {"max_step": "service", "up_cooldown": "default",
                       "down_cooldown": "service"}


def test_stored_overrides_ignore_what_is_not_a_limit():
    assert stored_overrides({"max_step": 0, "up_cooldown": -1, "down_cooldown": "2m"}) == {}
    assert stored_overrides({"max_step": True, "up_cooldown": float("nan")}) == {}
    assert stored_overrides({"max_step": None, "up_cooldown": 5}) == \
        {"max_step": None, "up_cooldown": 5.0}
    assert stored_overrides("junk") == {}


# -- properties: a simulated service whose connectors do what they are told -------------

limits_strategy = st.builds(Limits, max_step=st.none() | st.integers(1, 5),
                            up_cooldown=st.sampled_from([0.0, 1.0, 7.5, 30.0]),
                            down_cooldown=st.sampled_from([0.0, 2.0, 60.0]))
counts = st.dictionaries(st.sampled_from("abcd"), st.integers(0, 20), min_size=1)


def simulate(limits, running, placement, waits):
    """Cycle after cycle the connectors carry out every order at once; a cycle comes
    after each of `waits` in turn (0: at the next step pace() names, as a worker woken by
    it). The final counts, and the orders sent with their times."""
    computes = sorted(running.keys() | placement.keys())
    running = {c: running.get(c, 0) for c in computes}
    steps, now, sent = Steps(), T, []
    for cycle in range(5000):
        orders = [order(c, running[c], placement.get(c, 0)) for c in computes
                  if running[c] != placement.get(c, 0)]
        if not orders:
            return running, sent
        paced = pace(orders, limits, steps, now, sum(running.values()),
                     sum(placement.values()))
        steps = paced.steps
        for o in paced.orders:
            sent.append((now, o))
            running[o.compute] = o.number
        wait = waits[cycle % len(waits)]
        now = now + wait if wait else max(now, paced.next_step or now)
    raise AssertionError(f"not converged: {running} for {placement}")


@settings(max_examples=300, deadline=None)
@given(limits_strategy, counts, counts, st.lists(st.sampled_from([0.0, 0.5, 3.0, 45.0]), min_size=1, max_size=4))
def test_the_placement_is_always_reached_within_the_limits(limits, running, placement, waits):
    final, sent = simulate(limits, running, placement, waits)
    assert final == {c: placement.get(c, 0) for c in final}
    for _, o in sent:
        assert limits.max_step is None or abs(o.number - o.observed) <= limits.max_step
    for way, cooldown in (("up", limits.up_cooldown), ("down", limits.down_cooldown)):
        times = sorted({at for at, o in sent if (o.number > o.observed) == (way == "up")})
        assert all(b - a >= cooldown for a, b in zip(times, times[1:]))


def workers(limits, running, placement, delays):
    """As the leader's engine runs it: one worker per compute decides from what every
    compute last reported but sends only its own compute's order, at its own moment
    (`delays` after the previous one); a connector carries an order out one worker turn
    later. The final counts; each step (time, direction, counts then); each order
    (time, order, how many steps had been taken when it was sent)."""
    computes = sorted(running.keys() | placement.keys())
    running = {c: running.get(c, 0) for c in computes}
    steps, now, taken, sent, ordered = Steps(), T, [], [], {}
    for turn in range(20000):
        running.update(ordered)  # last turn's order is carried out now
        ordered = {}
        if running == {c: placement.get(c, 0) for c in computes}:
            return running, taken, sent
        compute = computes[turn % len(computes)]
        orders = [order(c, running[c], placement.get(c, 0)) for c in computes
                  if running[c] != placement.get(c, 0)]
        paced = pace(orders, limits, steps, now, sum(running.values()),
                     sum(placement.values()))
        for way in ("up", "down"):
            if (paced.steps.last(way), paced.steps.granted(way)) != \
                    (steps.last(way), steps.granted(way)):
                taken.append((now, way, dict(running)))
        steps = paced.steps
        for o in paced.orders:
            if o.compute == compute:
                sent.append((now, o, len(taken)))
                ordered[compute] = o.number
        now += delays[turn % len(delays)]
    raise AssertionError(f"not converged: {running} for {placement}")


@settings(max_examples=200, deadline=None)
@given(limits_strategy, counts, counts, st.lists(st.sampled_from([0.0, 0.25, 2.0, 40.0]),
                                                 min_size=1, max_size=5).filter(any))
def test_per_compute_workers_keep_the_limits_and_arrive(limits, running, placement, delays):
    final, taken, sent = workers(limits, running, placement, delays)
    assert final == {c: placement.get(c, 0) for c in final}
    for way, cooldown in (("up", limits.up_cooldown), ("down", limits.down_cooldown)):
        times = [at for at, w, _ in taken if w == way]
        assert all(b - a >= cooldown for a, b in zip(times, times[1:]))
    for _, o, steps in sent:  # every order belongs to a step, within max_step of it
        way = "up" if o.number > o.observed else "down"
        then = [counts for _, w, counts in taken[:steps] if w == way]
        if limits.active:
            assert then, o
        if limits.max_step is not None:
            assert abs(o.number - then[-1][o.compute]) <= limits.max_step
