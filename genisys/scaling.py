"""Scale requests: derive the placement and commit it with the total, atomically.

Total and placement are written in one Consul transaction with check-and-set on both
keys and check-index on every compute the placement uses. Two replicas racing on one
service cannot lose an update: the loser re-reads and tries again.
"""

import logging

from genisys.placement import place
from genisys.store import Conflict, ConsulStore, ConsulUnavailable, NotFound

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 20


async def scale(store: ConsulStore, service: str, number: int, compute: str | None,
                strategy: str) -> dict[str, int]:
    """Set `service`'s desired total to `number`; returns the new placement."""
    for attempt in range(MAX_ATTEMPTS):
        # The first attempt reads computes from the local view; after a conflict, or a
        # compute the view does not know yet, read them from Consul itself.
        fresh = attempt > 0
        computes = await store.compute_entries(consistent=fresh)
        if not computes:
            raise Conflict("no compute is defined: create one with POST /compute first.")
        indexes = {c.name: index for c, index in computes}
        if compute is not None and compute not in indexes:
            if fresh:
                raise NotFound(f"compute {compute!r} does not exist.")
            continue
        seen = await store.read_desired(service)
        placement = place(number, list(indexes), seen.placement, strategy, compute)
        used = {name: indexes[name] for name in placement}
        if await store.commit_desired(service, number, placement, seen, used):
            log.info("desired total of %s set to %d (was %s), placement %s", service, number,
                     seen.total, _describe(placement))
            return placement
    raise ConsulUnavailable(f"could not update {service} after {MAX_ATTEMPTS} attempts: "
                            "too many concurrent changes")


def _describe(placement: dict[str, int]) -> str:
    return ", ".join(f"{c}={n}" for c, n in placement.items()) or "none"
