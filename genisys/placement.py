"""Placement strategies: how a service's desired total is split over computes.

Pure functions with no I/O, so the API (scale) and the leader (total changed by an
external writer) derive exactly the same placement from the same inputs.

Every strategy keeps what runs: a scale-up only adds, a scale-down only removes, an
unchanged total changes nothing. No compute is given more than its `max`; what does not
fit is left out of the placement (its shortfall: total - placement_total) and placed as
soon as room appears.
"""

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

STRATEGIES = ("first", "spread", "weighted", "priority")


@dataclass(frozen=True)
class ComputeSpec:
    """What a compute's definition tells the strategies about it (defaults: no limit).
    weight: its share under `weighted` (0: nothing unless a scale names it).
    max: the most instances of any one service it takes (None: no limit).
    priority: the order of `priority` (higher first)."""
    weight: int = 1
    max: int | None = None
    priority: int = 0


class NoComputeError(ValueError):
    """Resources are wanted but there is nowhere to put them (the API answers 409)."""


def placement_total(placement: dict[str, int]) -> int:
    """Sum of a placement, i.e. the number of resources it holds."""
    return sum(placement.values())


def within_limits(placement: Mapping[str, int], specs: Mapping[str, ComputeSpec]) -> bool:
    """No compute holds more than its max."""
    return all(_cap(specs, c) is None or n <= _cap(specs, c) for c, n in placement.items())


def _cap(specs: Mapping[str, ComputeSpec], compute: str) -> int | None:
    spec = specs.get(compute)
    return spec.max if spec else None


def _clamped(count: int, cap: int | None) -> int:
    return count if cap is None else min(count, cap)


def _room(counts: dict[str, int], specs: Mapping[str, ComputeSpec], compute: str,
          wanted: int) -> int:
    """How many of `wanted` more fit on `compute`."""
    cap = _cap(specs, compute)
    return wanted if cap is None else max(0, min(wanted, cap - counts.get(compute, 0)))


def apportion(number: int, weights: dict[str, int], caps: Mapping[str, int | None],
              offset: int) -> dict[str, int]:
    """Split `number` in proportion to `weights` by largest remainder, none over its cap
    (a compute whose quota reaches its cap gets the cap, the others split the rest). Each
    gets the floor or the ceiling of its quota, the ceilings to the largest remainders;
    equal remainders in the order of `weights` rotated by `offset`, so that no name is
    always first. Less than `number` when the caps do not allow it."""
    result = dict.fromkeys(weights, 0)
    active = [c for c, w in weights.items() if w > 0 and caps.get(c) != 0]
    while number > 0 and active:
        total_weight = sum(weights[c] for c in active)
        full = [c for c in active if caps.get(c) is not None
                and number * weights[c] // total_weight >= caps[c]]
        if full:  # give these their cap and split the rest among the others
            for c in full:
                result[c] = caps[c]
                number -= caps[c]
            active = [c for c in active if c not in full]
            continue
        remainders = {}
        for c in active:
            result[c], remainders[c] = divmod(number * weights[c], total_weight)
        position = {c: (i - offset) % len(weights) for i, c in enumerate(weights)}
        ranked = sorted(active, key=lambda c: (-remainders[c], position[c]))
        for c in ranked[:number - sum(result[c] for c in active)]:
            result[c] += 1
        break
    return {c: n for c, n in result.items() if n > 0}


# A strategy is a pair: grow(counts, more) adds up to `more`, shrink(counts, fewer)
# removes `fewer`; both change `counts` in place and never touch a count the other way.

def _fill(order: list[str], specs: Mapping[str, ComputeSpec]) -> Callable:
    """Grow in `order`, each compute up to its max before the next."""
    def grow(counts: dict[str, int], more: int) -> None:
        for compute in order:
            added = _room(counts, specs, compute, more)
            counts[compute] = counts.get(compute, 0) + added
            more -= added
    return grow


def _empty(order: list[str]) -> Callable:
    """Shrink in `order`, each compute down to 0 before the next."""
    def shrink(counts: dict[str, int], fewer: int) -> None:
        for compute in order:
            taken = min(fewer, counts.get(compute, 0))
            counts[compute] = counts.get(compute, 0) - taken
            fewer -= taken
    return shrink


def _proportional(weights: dict[str, int], specs: Mapping[str, ComputeSpec],
                  offset: int) -> tuple[Callable, Callable]:
    """Grow where a compute is below its share of the new total, shrink where it is
    above; weight-0 computes are never grown and are shrunk first."""
    caps = {c: _cap(specs, c) for c in weights}
    weighted = [c for c, w in weights.items() if w > 0]

    def ideal(counts: dict[str, int], change: int) -> dict[str, int]:
        total = sum(counts.get(c, 0) for c in weighted) + change
        return apportion(total, {c: weights[c] for c in weighted}, caps, offset)

    def grow(counts: dict[str, int], more: int) -> None:
        more = min(more, sum(_room(counts, specs, c, more) for c in weighted))
        shares = ideal(counts, more)
        below = {c: max(0, shares.get(c, 0) - counts.get(c, 0)) for c in weighted}
        for c, n in apportion(more, below, below, offset).items():
            counts[c] = counts.get(c, 0) + n

    def shrink(counts: dict[str, int], fewer: int) -> None:
        unweighted = {c: counts.get(c, 0) for c in weights if weights[c] == 0}
        fewer = _take(counts, apportion(min(fewer, sum(unweighted.values())), unweighted,
                                        unweighted, offset), fewer)
        shares = ideal(counts, -fewer)
        above = {c: max(0, counts.get(c, 0) - shares.get(c, 0)) for c in weighted}
        _take(counts, apportion(fewer, above, above, offset), fewer)

    return grow, shrink


def _take(counts: dict[str, int], taken: dict[str, int], fewer: int) -> int:
    """Remove `taken` from `counts`; how many of `fewer` are left to remove."""
    for c, n in taken.items():
        counts[c] -= n
    return fewer - placement_total(taken)


def _strategy(strategy: str, computes: list[str], specs: Mapping[str, ComputeSpec],
              service: str) -> tuple[Callable, Callable]:
    if strategy == "first":
        # As if the scale named the oldest compute (see place): then in definition
        # order on max; shrink from the newest.
        return _fill(computes, specs), _empty(computes[::-1])
    if strategy == "priority":
        order = sorted(computes, key=lambda c: -specs.get(c, ComputeSpec()).priority)
        return _fill(order, specs), _empty(order[::-1])
    # A stable hash of the service: each service breaks remainder ties its own way.
    offset = zlib.crc32(service.encode())
    if strategy == "weighted":
        weights = {c: specs.get(c, ComputeSpec()).weight for c in computes}
    else:
        weights = dict.fromkeys(computes, 1)
    return _proportional(weights, specs, offset)


def place(total: int, computes: list[str], current: dict[str, int],
          strategy: str = "first", compute: str | None = None,
          specs: Mapping[str, ComputeSpec] | None = None,
          service: str = "") -> dict[str, int]:
    """Return the new placement (count per compute, zero entries omitted) for a service whose desired total is `total`.
    computes: names of the existing computes in definition order (oldest first).
    current: the service's current placement (may name computes that no longer exist, may be empty).
    compute: the compute named by the scale request, or None to let the strategy decide.
    specs: each compute's weight, max and priority (absent: ComputeSpec()).
    service: the service's name (breaks remainder ties of `spread` and `weighted`).
    The result holds less than `total` when the computes' max do not allow more."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown placement strategy {strategy!r}, expected one of {STRATEGIES}")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"total must be an integer >= 0, got {total!r}")
    if compute is not None and compute not in computes:
        raise ValueError(f"unknown compute {compute!r}")
    if total == 0:
        return {}
    if not computes:
        raise NoComputeError("no compute is defined")
    specs = specs or {}
    # Counts on computes that no longer exist, or over a max, are dropped: the strategy
    # re-places them as growth.
    counts = {c: _clamped(max(0, current.get(c, 0)), _cap(specs, c)) for c in computes}
    grow, shrink = _strategy(strategy, computes, specs, service)
    change = total - placement_total(counts)
    if strategy == "first" and compute is None:
        compute = computes[0]
    if compute is not None:  # the named compute first, the rest by the strategy
        named = _room(counts, specs, compute, change) if change > 0 else \
            -min(-change, counts[compute])
        counts[compute] += named
        change -= named
    if change > 0:
        grow(counts, change)
    elif change < 0:
        shrink(counts, -change)
    return {c: counts[c] for c in computes if counts[c] > 0}
