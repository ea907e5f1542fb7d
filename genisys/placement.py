"""Placement strategies: how a service's desired total is split over computes.

Pure functions with no I/O, so the API (scale) and the leader (total changed by an
external writer) derive exactly the same placement from the same inputs.
"""

from collections.abc import Mapping
from dataclasses import dataclass

STRATEGIES = ("first", "spread")


@dataclass(frozen=True)
class ComputeSpec:
    """What a compute's definition tells the strategies about it (defaults: no limit)."""
    weight: int = 1
    max: int | None = None
    priority: int = 0


class NoComputeError(ValueError):
    """Resources are wanted but there is nowhere to put them (the API answers 409)."""


def placement_total(placement: dict[str, int]) -> int:
    """Sum of a placement, i.e. the number of resources it holds."""
    return sum(placement.values())


def _toward(total: int, computes: list[str], kept: dict[str, int], target: str) -> dict[str, int]:
    """Grow on `target`; shrink from `target` first, then from the newest computes."""
    counts = dict(kept)
    excess = placement_total(counts) - total
    if excess < 0:
        counts[target] = counts.get(target, 0) - excess
    for name in [target] + [c for c in reversed(computes) if c != target]:
        if excess <= 0:
            break
        taken = min(excess, counts.get(name, 0))
        counts[name] = counts.get(name, 0) - taken
        excess -= taken
    return {c: counts[c] for c in computes if counts.get(c, 0) > 0}


def _spread(total: int, computes: list[str]) -> dict[str, int]:
    """Even split; the remainder goes one each to the earliest computes."""
    share, extra = divmod(total, len(computes))
    counts = {c: share + (1 if i < extra else 0) for i, c in enumerate(computes)}
    return {c: n for c, n in counts.items() if n > 0}


def place(total: int, computes: list[str], current: dict[str, int],
          strategy: str = "first", compute: str | None = None,
          specs: Mapping[str, ComputeSpec] | None = None) -> dict[str, int]:
    """Return the new placement (count per compute, zero entries omitted) for a service whose desired total is `total`.
    computes: names of the existing computes in definition order (oldest first).
    current: the service's current placement (may name computes that no longer exist, may be empty).
    compute: the compute named by the scale request, or None to let the strategy decide.
    specs: each compute's weight, max and priority (absent: ComputeSpec())."""
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
    # Counts on computes that no longer exist are dropped: the strategy re-places them as growth.
    kept = {c: current[c] for c in computes if current.get(c, 0) > 0}
    if compute is not None:
        return _toward(total, computes, kept, compute)
    if strategy == "spread":
        return _spread(total, computes)
    return _toward(total, computes, kept, computes[0])
