"""The leader's side of velocity limits (genisys.velocity decides, this remembers).

It keeps every service's last steps, read from Consul when a term starts, and records a
new step there, guarded by the leader's session, BEFORE any order of it is sent: a new
leader reads what its predecessor did even if that one died right after sending. Orders
of services without limits, and of services being deleted, pass untouched and cost
nothing.
"""

import asyncio
import logging
import time

from genisys.plan import Desired, ScaleOrder
from genisys.store import ConsulStore
from genisys.velocity import Limits, Steps, effective, pace

log = logging.getLogger(__name__)


class Pacer:
    def __init__(self, store: ConsulStore, defaults: Limits):
        self.store = store
        self.defaults = defaults
        self.statuses: dict[str, str] = {}  # service -> "stepping: ..." while in steps
        self._steps: dict[str, Steps] | None = None  # None: read them from Consul first
        self._lock = asyncio.Lock()  # one decision at a time: a step is taken once

    def new_term(self) -> None:
        self._steps, self.statuses = None, {}

    def limits(self, service: str) -> Limits:
        return effective(self.defaults, self.store.velocity_overrides(service))[0]

    async def allow(self, term, desired: Desired, orders: list[ScaleOrder],
                    counts: dict[tuple[str, str], int]) -> tuple[list[ScaleOrder],
                                                                  dict[str, float]]:
        """The orders the services' limits allow now (their steps recorded first), and
        for each service with orders held back or cut short, when (time.time()) its next
        step is due. `counts`: what each (service, compute) pair reported."""
        by_service: dict[str, list[ScaleOrder]] = {}
        for order in orders:
            by_service.setdefault(order.service, []).append(order)
        limited = {service: limits for service in by_service
                   if service not in desired.deleting
                   and (limits := self.limits(service)).active}
        for service in desired.totals.keys() - by_service.keys():
            self.statuses.pop(service, None)  # nothing to order: not in steps
        if not limited:
            return orders, {}
        async with self._lock:
            if self._steps is None:
                self._steps = await self.store.last_steps()
            now = time.time()
            paced = {service: pace(by_service[service], limits,
                                   self._steps.get(service, Steps()), now,
                                   sum(counts.get((service, c), 0) for c in desired.computes),
                                   desired.totals.get(service, 0))
                     for service, limits in limited.items()}
            steps = {service: p.steps for service, p in paced.items()
                     if p.steps != self._steps.get(service, Steps())}
            if steps and not await self.store.record_steps(term.session, steps):
                log.warning("could not record the steps of %s: their orders wait",
                            ", ".join(sorted(steps)))
                return [o for o in orders if o.service not in limited], {}
            self._steps.update(steps)
        for service, p in paced.items():
            if p.status:
                self.statuses[service] = p.status
            else:
                self.statuses.pop(service, None)
        allowed = [o for o in orders if o.service not in limited]
        allowed += [o for p in paced.values() for o in p.orders]
        return allowed, {service: p.next_step for service, p in paced.items()
                         if p.next_step is not None}

    def forget(self, services: set[str]) -> None:
        for service in services:
            self.statuses.pop(service, None)
            if self._steps is not None:
                self._steps.pop(service, None)
