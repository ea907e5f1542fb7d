"""Scale requests: derive the placement and commit it with the total, atomically.

Total and placement are written in one Consul transaction with check-and-set on both
keys and check-index on every compute the placement uses. Two replicas racing on one
service cannot lose an update: the loser re-reads and tries again.

A scale may carry the index a dry run answered (`if_index`): it is applied only while
the service's total and placement are still at that index (as `nomad job plan` and
`-check-index`); the check-and-set makes that atomic.
"""

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from genisys.placement import place
from genisys.store import Conflict, ConsulStore, ConsulUnavailable, DesiredRecord, NotFound

log = logging.getLogger(__name__)

# A commit that loses races keeps trying, with a growing random pause (so that racing
# writers spread out), for at most this long.
GIVE_UP_AFTER = 5.0
MAX_PAUSE = 0.05


class Stale(Exception):
    """The service changed since the index a scale was conditioned on (HTTP 412)."""


@dataclass(frozen=True)
class Plan:
    """Where a scale puts the service, from what was read at `seen.index`."""
    placement: dict[str, int]
    seen: DesiredRecord
    compute_indexes: dict[str, int]  # computes the placement uses -> their ModifyIndex


async def scale(store: ConsulStore, service: str, number: int, compute: str | None,
                strategy: str, if_index: int | None = None) -> dict[str, int]:
    """Set `service`'s desired total to `number`; returns the new placement. Stale when
    `if_index` is given and the service is no longer at that index."""
    deadline, pause, attempt = time.monotonic() + GIVE_UP_AFTER, 0.001, 0
    while attempt == 0 or time.monotonic() < deadline:
        attempt += 1
        planned = await plan(store, service, number, compute, strategy, fresh=attempt > 1)
        if planned is None:
            continue  # the view may lag behind: look in Consul
        seen, placement = planned.seen, planned.placement
        if if_index is not None and seen.index != if_index:
            if attempt == 1:
                continue  # the view may lag behind the dry run's read: look in Consul
            raise Stale(f"service {service!r} changed since index {if_index} (it is now at "
                        f"{seen.index}): run the dry run again.")
        if await store.commit_desired(service, number, placement, seen,
                                      planned.compute_indexes):
            log.info("desired total of %s set to %d (was %s), placement %s", service, number,
                     seen.total, _describe(placement), extra={"service": service})
            return placement
        if attempt > 1:
            await asyncio.sleep(random.uniform(0, pause))
            pause = min(pause * 2, MAX_PAUSE)
    raise ConsulUnavailable(f"could not update {service} within {GIVE_UP_AFTER:g}s "
                            f"({attempt} attempts): too many concurrent changes")


async def preview(store: ConsulStore, service: str, number: int, compute: str | None,
                  strategy: str) -> Plan:
    """The plan of a dry run: what a scale would commit now."""
    planned = await plan(store, service, number, compute, strategy)
    return planned or await plan(store, service, number, compute, strategy, fresh=True)


async def plan(store: ConsulStore, service: str, number: int, compute: str | None,
               strategy: str, fresh: bool = False) -> Plan | None:
    """The placement a scale would commit, changing nothing; None when the local view
    knows no compute, or not `compute`, or says the service is being deleted (read again
    with `fresh`). Conflict for a service being deleted."""
    # The first attempt plans from the local view, as of what it last heard (the commit's
    # check-and-set refuses it if that was not the latest); after a refusal, or what the
    # view does not know yet, from Consul itself.
    computes = await store.compute_entries(consistent=fresh)
    if not computes:
        if not fresh:
            return None
        raise Conflict("no compute is defined: create one with POST /compute first.")
    # A compute being deleted takes nothing new; the commit checks its index, so a
    # delete that marks it meanwhile makes this attempt fail and re-read.
    indexes = {c.name: index for c, index in computes if not c.deleting}
    if compute is not None and compute not in indexes:
        if not fresh:
            return None
        if any(c.name == compute for c, _ in computes):
            raise Conflict(f"compute {compute!r} is being deleted.")
        raise NotFound(f"compute {compute!r} does not exist.")
    if not indexes and number > 0:
        raise Conflict("every compute is being deleted: create one with POST /compute.")
    seen = await store.read_desired(service) if fresh else store.known_desired(service)
    if seen.flags.get("deleting"):
        if not fresh:
            return None
        raise Conflict(f"service {service!r} is being deleted: scale it once it is gone.")
    specs = {c.name: c.spec for c, _ in computes}
    placement = place(number, list(indexes), seen.placement, strategy, compute, specs, service)
    return Plan(placement, seen, {name: indexes[name] for name in placement})


def _describe(placement: dict[str, int]) -> str:
    return ", ".join(f"{c}={n}" for c, n in placement.items()) or "none"
