"""Failover of a dead compute's share, and its return: pure decisions, no I/O.

A compute whose connector has failed every call for `failover_after` is dead: the share
each service has there is placed again, by the strategy, on the computes that answer.
What was moved away, and from where, is kept per service (in Consul, beside the
placement), so that any leader can move it back. A compute that answers again gets no
new share until it has answered for `failback_after`; its placement there is 0 meanwhile,
so the leader scales its surplus to 0 as soon as it answers. Then each service moves back
at most `step` instances at a time, the next step only once the computes report the
previous one, until its placement is what a fresh placement of the healthy computes is.

Level-triggered like genisys.plan: the decision depends on the health, the desired state
and the records now, so a new leader (or a scale made meanwhile) is simply taken as found.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from genisys.placement import place, placement_total
from genisys.plan import Desired, Observed


@dataclass(frozen=True)
class Health:
    """What the leader saw of a compute's connector (times: time.monotonic()).
    failing_since: since when every call has failed (None: its last call answered).
    healthy_since: since when every call has answered (None: failing, or never asked)."""
    failing_since: float | None = None
    healthy_since: float | None = None


def track(previous: Health | None, failing_since: float | None, now: float) -> Health:
    """A compute's health from its connector calls' `failing_since` sampled at `now` (the
    first sample that finds it answering starts its healthy clock)."""
    if failing_since is not None:
        return Health(failing_since, None)
    if previous is not None and previous.healthy_since is not None:
        return previous
    return Health(None, now)


@dataclass(frozen=True)
class Policy:
    """placement.failover_after, failback_after and failback_step (README "Failover")."""
    failover_after: float
    failback_after: float
    step: int = 1


@dataclass(frozen=True)
class Move:
    """One service's count on one compute changed by failover or its return."""
    service: str
    compute: str
    before: int
    after: int
    sentence: str


@dataclass
class Decision:
    placements: dict[str, dict[str, int]] = field(default_factory=dict)  # changed only
    records: dict[str, dict[str, int]] = field(default_factory=dict)     # changed; {}: none left
    moves: list[Move] = field(default_factory=list)


def decide(desired: Desired, health: Mapping[str, Health], records: Mapping[str, dict[str, int]],
           settled: set[str], strategy: str, policy: Policy, now: float) -> Decision:
    """The placements failover changes now, the records that change with them, and one
    Move per (service, compute) whose count changes.

    records: service -> {compute: count moved away from it} (what failover did and the
    return has not undone). settled: services whose computes report what is placed (a
    return step waits for the previous one)."""
    computes = list(desired.computes)
    dead = {c: now - health[c].failing_since for c in computes
            if c in health and health[c].failing_since is not None
            and now - health[c].failing_since >= policy.failover_after}
    away = {c for record in records.values() for c in record}

    def eligible(compute: str) -> bool:
        """Answering, and past its hysteresis if a share was moved away from it."""
        seen = health.get(compute)
        if seen is None or seen.healthy_since is None:
            return False  # failing, or not asked yet by this leader
        return compute not in away or now - seen.healthy_since >= policy.failback_after

    targets = [c for c in computes if eligible(c)]
    decision = Decision()
    for service, total in desired.totals.items():
        if service in desired.paused or service in desired.deleting:
            continue
        placement = desired.placements.get(service, {})
        record = {c: n for c, n in records.get(service, {}).items() if c in desired.computes}
        if not targets or any(c not in desired.computes for c in placement):
            pass  # nowhere to go; or placed again first by plan.placements_to_fix
        elif any(placement.get(c, 0) for c in dead):
            new = _fail_over(service, total, placement, dead, targets, strategy,
                             desired.specs)
            for compute in dead:
                moved = placement.get(compute, 0) - new.get(compute, 0)
                if moved > 0:
                    record[compute] = record.get(compute, 0) + moved
                    decision.moves.append(Move(
                        service, compute, placement[compute], new.get(compute, 0),
                        f"compute {compute} dead for {dead[compute]:.0f}s: {moved} of "
                        f"{service} moved to {_gains(placement, new)}"
                        + (f", {new[compute]} stay (no room elsewhere)"
                           if new.get(compute) else "")))
            _changed(decision, service, placement, new)
        elif service in settled and any(c in targets for c in record):
            held = _held(placement, targets)
            goal = {**held, **place(total - placement_total(held), targets, {}, strategy,
                                    specs=desired.specs, service=service)}
            new = _step(placement, goal, computes, policy.step)
            for compute in computes:
                gained = new.get(compute, 0) - placement.get(compute, 0)
                if gained > 0:
                    decision.moves.append(Move(
                        service, compute, placement.get(compute, 0), new[compute],
                        f"compute {compute} healthy for "
                        f"{now - health[compute].healthy_since:.0f}s: {gained} of {service} "
                        f"moved back from {_gains(new, placement)}"))
            if new == goal:  # returned: the placement is what a fresh one gives
                record = {c: n for c, n in record.items() if c not in targets}
            _changed(decision, service, placement, new)
        if record != records.get(service, {}):
            decision.records[service] = record
    return decision


def _held(placement: dict[str, int], targets: list[str]) -> dict[str, int]:
    """What stays where it is: counts on computes that take nothing new."""
    return {c: n for c, n in placement.items() if c not in targets and n > 0}


def _fail_over(service: str, total: int, placement: dict[str, int],
               dead: Mapping[str, float], targets: list[str], strategy: str,
               specs) -> dict[str, int]:
    """`total` placed by the strategy on `targets`, beside what stays on the computes
    that take nothing new; what does not fit (their max) stays on the dead computes."""
    new = {c: n for c, n in _held(placement, targets).items() if c not in dead}
    new.update(place(total - placement_total(new), targets,
                     {c: placement[c] for c in targets if c in placement}, strategy,
                     specs=specs, service=service))
    missing = total - placement_total(new)
    for compute in dead:  # a shortfall stays on the dead computes, never dropped
        kept = min(missing, placement.get(compute, 0))
        if kept:
            new[compute] = kept
            missing -= kept
    return new


def _changed(decision: Decision, service: str, placement: dict[str, int],
             new: dict[str, int]) -> None:
    if new != placement:
        decision.placements[service] = new


def _step(placement: dict[str, int], goal: dict[str, int], computes: list[str],
          step: int) -> dict[str, int]:
    """`placement` moved toward `goal` by at most `step` instances (same total)."""
    new = dict(placement)
    names = computes + [c for c in placement if c not in computes]
    surplus = [c for c in names if new.get(c, 0) > goal.get(c, 0)]
    for compute in names:
        while step > 0 and new.get(compute, 0) < goal.get(compute, 0) and surplus:
            source = surplus[0]
            moved = min(step, goal[compute] - new.get(compute, 0),
                        new[source] - goal.get(source, 0))
            new[compute] = new.get(compute, 0) + moved
            new[source] -= moved
            step -= moved
            if new[source] == goal.get(source, 0):
                surplus.pop(0)
    return {c: n for c, n in new.items() if n > 0}


def _gains(before: dict[str, int], after: dict[str, int]) -> str:
    """Where `after` holds more than `before`: "a (+2), c (+1)"."""
    gains = [f"{c} (+{after[c] - before.get(c, 0)})" for c in after
             if after[c] > before.get(c, 0)]
    return ", ".join(gains) or "nowhere"



def policy(section) -> Policy | None:
    """The failover policy of the configuration's placement section; None when it is off
    (failover_after 0: one failed call must never move anything)."""
    if not section.failover_after:
        return None
    back = section.failback_after
    return Policy(section.failover_after,
                  section.failover_after if back is None else back, section.failback_step)


def settled(desired: Desired, observed: Observed) -> set[str]:
    """Services whose computes, those that answered, report what their placement says."""
    unsettled = {service for (service, compute), count in observed.counts.items()
                 if count != desired.placements.get(service, {}).get(compute, 0)}
    return set(desired.totals) - unsettled
