"""The leader's side of velocity limits (genisys.velocity decides, this remembers).

It keeps every service's last steps, read from Consul when a term starts, and records a
new step there, guarded by the leader's session, BEFORE any order of it is sent: a new
leader reads what its predecessor did even if that one died right after sending. Orders
of services without limits, and of services being deleted, are not its concern.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from genisys.plan import Desired, ScaleOrder
from genisys.store import ConsulError, ConsulStore, ConsulUnavailable
from genisys.velocity import Limits, Steps, effective, pace

log = logging.getLogger(__name__)

# Steps that could not be read or recorded (Consul down, the lock lost): their orders
# wait, and are decided again after this many seconds.
RETRY = 1.0


class Pacer:
    def __init__(self, store: ConsulStore, defaults: Limits,
                 on_status: Callable[[str], None] = lambda service: None):
        self.store = store
        self.defaults = defaults
        self.statuses: dict[str, str] = {}  # service -> "stepping: ..." while in steps
        self._on_status = on_status  # a service's status sentence changed
        self._steps: dict[str, Steps] | None = None  # None: read them from Consul first
        self._lock = asyncio.Lock()  # one decision at a time: a step is taken once

    def new_term(self) -> None:
        self._steps, self.statuses = None, {}

    def limited(self, services, desired: Desired) -> set[str]:
        """Those of `services` whose orders the limits concern: not being deleted, with
        limits (the defaults or their own)."""
        return {service for service in services if service not in desired.deleting
                and effective(self.defaults, self.store.velocity_overrides(service))[0].active}

    async def allow(self, term, desired: Desired, orders: list[ScaleOrder],
                    counts: dict[tuple[str, str], int]) -> tuple[list[ScaleOrder],
                                                                  dict[str, float]]:
        """Of the orders of services with limits (every compute's, so that a step spans
        them all), those allowed now, their step recorded first; and for each service
        with orders held back or cut short, when (time.time()) its next step is due.
        `counts`: what each (service, compute) pair reported."""
        by_service: dict[str, list[ScaleOrder]] = {}
        for order in orders:
            by_service.setdefault(order.service, []).append(order)
        async with self._lock:
            now = time.time()
            try:
                if self._steps is None:
                    self._steps = await self.store.last_steps()
                paced = {service: pace(
                    its, effective(self.defaults, self.store.velocity_overrides(service))[0],
                    self._steps.get(service, Steps()), now,
                    sum(counts.get((service, c), 0) for c in desired.computes),
                    desired.totals.get(service, 0)) for service, its in by_service.items()}
                steps = {service: p.steps for service, p in paced.items()
                         if p.steps != self._steps.get(service, Steps())}
                if steps and not await self.store.record_steps(term.session, steps):
                    raise ConsulError("Consul refused the write: this replica no longer leads")
            except (ConsulUnavailable, ConsulError) as exc:
                log.warning("cannot record the velocity steps of %s, their orders wait: %s",
                            ", ".join(sorted(by_service)), exc)
                return [], {service: now + RETRY for service in by_service}
            self._steps.update(steps)
        for service, p in paced.items():
            self.settle(service, p.status)
        return ([o for p in paced.values() for o in p.orders],
                {service: p.next_step for service, p in paced.items()
                 if p.next_step is not None})

    def settle(self, service: str, status: str | None = None) -> None:
        """Set the service's status sentence (None: not in steps)."""
        if self.statuses.get(service) == status:
            return
        if status is None:
            del self.statuses[service]
        else:
            self.statuses[service] = status
        self._on_status(service)

    def forget(self, services: set[str]) -> None:
        for service in services:
            self.statuses.pop(service, None)
            if self._steps is not None:
                self._steps.pop(service, None)
