"""The reconciler's decisions: pure functions from one snapshot of state to actions.

Level-triggered, as in Kubernetes controllers: given what is desired and what is
observed now, say what to do; running it again on the result says "nothing".
"""

from dataclasses import dataclass, field

from genisys.placement import NoComputeError, place, placement_total


@dataclass(frozen=True)
class Desired:
    """One snapshot of the desired state, read from Consul."""
    computes: dict[str, str]               # name -> connector URL, in definition order
    totals: dict[str, int]                 # service -> desired total
    placements: dict[str, dict[str, int]]  # service -> count per compute


@dataclass
class Observed:
    """What the connectors said in one cycle."""
    counts: dict[tuple[str, str], int] = field(default_factory=dict)   # (service, compute) -> n
    errors: dict[tuple[str, str], str] = field(default_factory=dict)   # (service, compute) -> why


@dataclass(frozen=True)
class ScaleOrder:
    service: str
    compute: str
    number: int
    observed: int


def placements_to_fix(desired: Desired, strategy: str) -> dict[str, dict[str, int]]:
    """New placements for services whose placement does not match their total.

    That happens when the total was written by another tool (only the total changed), or
    when a compute holding resources was deleted: the strategy places the difference.
    """
    computes = list(desired.computes)
    fixes = {}
    for service, total in desired.totals.items():
        current = desired.placements.get(service, {})
        if placement_total(current) == total and all(c in desired.computes for c in current):
            continue
        try:
            fixes[service] = place(total, computes, current, strategy)
        except NoComputeError:
            continue  # nowhere to put it yet; reported through the status
    return fixes


def scale_orders(desired: Desired, observed: Observed) -> list[ScaleOrder]:
    """An order wherever a compute runs a different number than its placement says.

    Services without a desired total are never touched, and neither is a (service,
    compute) pair whose count is unknown this cycle.
    """
    orders = []
    for service in desired.totals:
        placement = desired.placements.get(service, {})
        for compute in desired.computes:
            have = observed.counts.get((service, compute))
            want = placement.get(compute, 0)
            if have is not None and have != want:
                orders.append(ScaleOrder(service, compute, want, have))
    return orders
