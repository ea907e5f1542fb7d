"""The reconciler's decisions: pure functions from one snapshot of state to actions.

Level-triggered, as in Kubernetes controllers: given what is desired and what is
observed now, say what to do; running it again on the result says "nothing".
"""

from dataclasses import dataclass, field

from genisys.placement import ComputeSpec, NoComputeError, place, placement_total, within_limits

# Accepted orders after which a pair that still reports another count gets a warning
# (the first order may legitimately be observed before it has taken effect).
WARN_AFTER = 3


@dataclass(frozen=True)
class Desired:
    """One snapshot of the desired state, read from Consul."""
    computes: dict[str, str]               # name -> connector URL, in definition order
    totals: dict[str, int]                 # service -> desired total
    placements: dict[str, dict[str, int]]  # service -> count per compute
    # Lifecycle flags (POST /service/{svc}/pause, DELETE /service/{svc}).
    paused: frozenset[str] = frozenset()    # observed, never ordered
    deleting: frozenset[str] = frozenset()  # scaled to 0, then forgotten
    specs: dict[str, ComputeSpec] = field(default_factory=dict)  # weight, max, priority


@dataclass
class Observed:
    """What the connectors said in one observation."""
    counts: dict[tuple[str, str], int] = field(default_factory=dict)   # (service, compute) -> n
    errors: dict[tuple[str, str], str] = field(default_factory=dict)   # (service, compute) -> why
    # (service, compute) -> the count it is still working towards: an order in progress
    # (one that outlived connector.timeout, or a `target` the connector reports).
    targets: dict[tuple[str, str], int] = field(default_factory=dict)


# (service, compute) -> (number ordered, orders the connector accepted since the pair
# last reported what is placed)
OrderCounts = dict[tuple[str, str], tuple[int, int]]


@dataclass(frozen=True)
class ScaleOrder:
    service: str
    compute: str
    number: int
    observed: int


def placements_to_fix(desired: Desired, strategy: str) -> dict[str, dict[str, int]]:
    """New placements for services whose placement is not what the strategy gives for
    their total within the computes' limits.

    That happens when the total was written by another tool (only the total changed),
    when a compute holding resources was deleted or its max lowered, or when room appears
    for a service that was short: the strategy places the difference. A short placement
    that still cannot grow is right as it is (placing it again changes nothing).
    """
    computes = list(desired.computes)
    fixes = {}
    for service, total in desired.totals.items():
        if placed_whole(desired, service):
            continue
        current = desired.placements.get(service, {})
        try:
            placed = place(total, computes, current, strategy, specs=desired.specs,
                           service=service)
        except NoComputeError:
            continue  # nowhere to put it yet; reported through the status
        if placed != current:
            fixes[service] = placed
    return fixes


def placed_whole(desired: Desired, service: str) -> bool:
    """Whether `service`'s placement holds its whole total on defined computes within
    their limits: then it needs no fix, and telling so costs no placing."""
    current = desired.placements.get(service, {})
    return (placement_total(current) == desired.totals[service]
            and all(c in desired.computes for c in current)
            and within_limits(current, desired.specs))


def scale_orders(desired: Desired, observed: Observed) -> list[ScaleOrder]:
    """An order wherever a compute runs, or is still working towards, a different number
    than its placement says. An order in progress towards the placed number is never
    sent again: it is awaited.

    Services without a desired total are never touched, nor paused ones (a delete
    clears the pause), nor a (service, compute) pair whose count is unknown this cycle.
    """
    orders = []
    for service in desired.totals:
        if service in desired.paused and service not in desired.deleting:
            continue
        placement = desired.placements.get(service, {})
        for compute in desired.computes:
            have = observed.counts.get((service, compute))
            want = placement.get(compute, 0)
            if have is not None and observed.targets.get((service, compute), have) != want:
                orders.append(ScaleOrder(service, compute, want, have))
    return orders


@dataclass(frozen=True)
class Decision:
    orders: list[ScaleOrder]
    sentence: str  # what was decided and why, for the log


def decide(desired: Desired, observed: Observed) -> Decision:
    """The orders for what `observed` covers, and one sentence saying why."""
    orders = scale_orders(desired, observed)
    if orders:
        said = "; ".join(f"{o.service} on {o.compute}: {order_reason(desired, o)}"
                         for o in orders[:3])
        more = f" and {len(orders) - 3} more" if len(orders) > 3 else ""
        return Decision(orders, f"{len(orders)} order(s): {said}{more}")
    services = {service for service, _ in observed.counts}
    awaited = sorted(f"{s} on {c} to {n}" for (s, c), n in observed.targets.items()
                     if s in desired.totals and observed.counts.get((s, c)) != n)
    paused = sorted(services & desired.paused - desired.deleting)
    sentence = f"no order for {len(services)} service(s) observed"
    if awaited:
        sentence += f"; awaiting orders in progress: {', '.join(awaited[:3])}"
    if paused:
        sentence += f"; paused: {', '.join(paused[:3])}"
    return Decision([], sentence)


def open_orders(orders: OrderCounts, desired: Desired, observed: Observed) -> OrderCounts:
    """The order counts still open after this observation. A pair's count closes once it
    reports what is placed, or when its placement moves on; pairs of services outside
    `desired` (a cycle over some services only) are kept as they are."""
    still_open = {}
    for (service, compute), (number, accepted) in orders.items():
        if service in desired.totals:
            placed = desired.placements.get(service, {}).get(compute, 0)
            if number != placed or observed.counts.get((service, compute)) == placed:
                continue
        still_open[service, compute] = (number, accepted)
    return still_open


def order_warnings(orders: OrderCounts, observed: Observed) -> dict[tuple[str, str], str]:
    """A sentence per pair whose connector accepted WARN_AFTER orders or more yet reports
    another count: it ignores its orders, or reports more than it was told to run."""
    warnings = {}
    for pair, (number, accepted) in orders.items():
        count = observed.counts.get(pair)
        if accepted < WARN_AFTER or count is None or count == number:
            continue
        if count > number:
            warnings[pair] = f"reports {count} running, more than the {number} placed"
        else:
            warnings[pair] = f"ordered {number}, still reports {count} after {accepted} orders"
    return warnings


def order_reason(desired: Desired, order: ScaleOrder) -> str:
    """Why the leader sends `order`, one sentence for the order history."""
    if order.service in desired.deleting:
        return f"service is being deleted, observed {order.observed}"
    placed = desired.placements.get(order.service, {}).get(order.compute, 0)
    if placed != order.number:  # cut short by the service's velocity limits
        return f"placement {placed}, observed {order.observed}: a step of the velocity limits"
    return f"placement {order.number}, observed {order.observed}"


def new_histories(histories: dict[str, list[dict]], events: list[dict],
                  length: int) -> dict[str, list[dict]]:
    """The history of each service with new `events` (in the order they happened): newest
    first, at most `length`, the oldest dropped."""
    new: dict[str, list[dict]] = {}
    for event in events:
        new.setdefault(event["service"], []).insert(0, event)
    return {service: (recent + histories.get(service, []))[:length]
            for service, recent in new.items()}


def finished_deletes(desired: Desired, observed: Observed) -> list[str]:
    """Deleting services that every compute now reports at 0: they can be forgotten."""
    return [service for service in sorted(desired.deleting)
            if desired.totals.get(service) == 0
            and all(observed.counts.get((service, c)) == 0 for c in desired.computes)]


def orphans(known: set[str], desired: Desired, managed: set[str]) -> set[str]:
    """Services with keys of Genisys's own (status, placement, history, flags) but no
    desired total, that the leader does not manage: another tool removed the total."""
    return known - set(desired.totals) - managed


def dry_run_orders(placement: dict[str, int], computes: list[str],
                   observed: dict[str, int]) -> list[dict]:
    """The orders a placement would cause against the leader's last observation; a
    compute never observed counts as 0."""
    return [{"compute": c, "from": observed.get(c, 0), "to": placement.get(c, 0)}
            for c in computes if observed.get(c, 0) != placement.get(c, 0)]
