"""A compute worker: one compute's keyed queue, observations and orders.

The leader runs one worker per defined compute. Each has its own queue (a set of
service names: a name queued twice is handled once), its own connector calls
(connector.concurrency at most in flight, connector.timeout each) and its own
re-observation of orders in progress, so that a compute that hangs or fails delays only
its own pairs.

Handling a name (level-triggered: the name carries no state) = take what is known of
the service on this compute (the last observation or order answer; the connector is
asked first when nothing is known, after an error, or while an order is in progress),
read its desired state whole (the engine's `desired`), decide (the engine's `decide`:
pure), send the orders, note everything in the Observations. A
service is handled by one task at a time per worker; a name queued meanwhile is handled
again once that task is done (as a Kubernetes workqueue does). A full observation of
every managed service runs every poll_interval on its own: the safety net.

An order that outlives connector.timeout is not an error: it is "in progress", observed
again after 0.5 s, then 1, 2, 4 s, and never sent again while the connector still works
towards it (see genisys.engine.observations).

For failover (issue 13): `failing_since` is the time.monotonic() since which every call
to this compute has gone unanswered, None while it answers.
"""

import asyncio
import logging
import math
import time
from datetime import UTC, datetime

from genisys.bounded import each, slices
from genisys.engine.calls import ComputeCalls, timed_out
from genisys.metrics import direction
from genisys.model import Compute
from genisys.plan import Desired, ScaleOrder, order_reason
from genisys.store import ConsulError, ConsulUnavailable

log = logging.getLogger(__name__)

# A batch read from the local view while it is out of sync is handled again after this.
UNAVAILABLE_RETRY = 1.0
# Services decided before the event loop gets a turn (a full observation covers them all).
DECIDING_SLICE = 1000
# A service in velocity steps is looked at again at its next step, not sooner than this:
# with no cooldown, the next step waits for the connector to report the last one.
STEP_RECHECK = 0.5


class ComputeWorker:
    def __init__(self, compute: Compute, calls: ComputeCalls, engine):
        """`engine` (genisys.engine.reconciler.Reconciler) gives the term, the managed
        services, `desired(services)`, `decide(desired, observed)`, the Observations and
        the settings."""
        self.compute = compute
        self.name = compute.name
        self.calls = calls
        self.engine = engine
        self.last_observation: dict | None = None  # the last full one: at, ok, seconds
        self._queue: set[str] = set()
        self._active: set[str] = set()             # being handled now
        self._rechecks: dict[str, float] = {}      # service -> when (monotonic) to look again
        # A keyed observation is in flight: names queued meanwhile wait for it to end and
        # then go in one batch, so that a burst costs a few calls, not one per change.
        self._observing = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    @property
    def failing_since(self) -> float | None:
        return self.calls.failing_since

    def enqueue(self, services: set[str]) -> None:
        if services:  # 10,000 workers woken for nothing cost more than the change itself
            self._queue |= services
            self._wake.set()

    async def run(self) -> None:
        """Handle queued names until cancelled."""
        self._spawn(self._observe_all())
        try:
            while True:
                self._wake.clear()
                now = time.monotonic()
                due = {s for s, at in self._rechecks.items() if at <= now}
                for service in due:
                    del self._rechecks[service]
                self._queue |= due
                batch = self._queue - self._active
                if batch and not self._observing:
                    self._queue -= batch
                    self._active |= batch
                    self._observing = True
                    self._spawn(self._handle(batch, keyed=True))
                wake_at = min(self._rechecks.values(), default=None)
                try:
                    async with asyncio.timeout(None if wake_at is None
                                               else max(0.0, wake_at - time.monotonic())):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling services on %s failed; the next full observation covers "
                      "them", self.name, exc_info=task.exception())

    async def _observe_all(self) -> None:
        """The safety net: every managed service, every poll_interval."""
        while True:
            started = time.monotonic()
            services = self.engine.managed - self._active
            self._active |= services
            try:
                observation = await self._handle(services, keyed=False)
            except Exception:  # a bug: the safety net itself must go on
                log.exception("the full observation of %s failed", self.name)
                observation = None
            self.last_observation = {
                "at": _now(), "ok": observation is not None and not observation.errors,
                "seconds": round(time.monotonic() - started, 3)}
            await asyncio.sleep(max(0.0, started + self.engine.poll_interval
                                    - time.monotonic()))

    async def _handle(self, services: set[str], keyed: bool):
        """Observe, decide, act for `services` (already marked active); the observation,
        or None when the desired state could not be read.

        A keyed handling decides from what is known of a pair (its last observation or
        order answer), as a controller decides from its cache: it asks the connector
        only for pairs never observed, failing, or with an order in progress. The full
        observation asks for every service."""
        observations = self.engine.observations
        ask = services if not keyed else {
            s for s in services if (s, self.name) not in observations.counts
            or (s, self.name) in observations.in_progress}
        held = set(services)  # released as soon as each service is done
        try:
            try:
                # One bulk call beats many single ones once a burst touches more services
                # than can be asked at once.
                observation = await self.calls.observe(
                    ask, bulk=not keyed or len(ask) >= self.engine.concurrency)
            finally:
                if keyed:
                    self._observing = False
                    self._wake.set()
            self.engine.observations.observed(
                self.name, observation, per_service=observation.per_service,
                reports_targets=self.calls.reports_targets,
                poll_interval=self.engine.poll_interval)
            orders, undecided = [], set(services)
            async for names in slices(services, DECIDING_SLICE):
                chunk = set(names)
                try:
                    decided = await self._decide(chunk, ask & chunk)
                except (ConsulUnavailable, ConsulError) as exc:
                    log.debug("cannot read the desired state of %d services: %s; again in "
                              "%gs", len(services), exc, UNAVAILABLE_RETRY)
                    again = time.monotonic() + UNAVAILABLE_RETRY
                    for service in undecided:
                        self._rechecks.setdefault(service, again)
                        self.engine.metrics.requeue("unavailable")
                    observation = None
                    break
                ordered = {order.service for order, _ in decided}
                self._release((held & chunk) - ordered)
                held -= chunk - ordered
                undecided -= chunk
                orders += decided
            await each(orders, self.engine.concurrency, lambda item: self._order(*item))
            return observation
        finally:
            self._release(held)

    async def _decide(self, services: set[str], asked: set[str]
                      ) -> list[tuple[ScaleOrder, Desired]]:
        """This compute's orders for `services`, each with the desired state it came from."""
        desired = self.engine.desired(services)
        self.engine.observations.settle(self.name, asked, desired)
        decision = self.engine.decide(desired, self.engine.observations.view(self.name, services))
        orders = [o for o in decision.orders if o.compute == self.name]
        orders, steps = await self.engine.pace(self.name, services, orders, desired)
        for service, at in steps.items():  # woken for its next step, or soon after
            self._rechecks[service] = min(self._rechecks.get(service, math.inf),
                                          time.monotonic() + max(STEP_RECHECK, at - time.time()))
        if orders:
            log.debug("%s: %s", self.name, decision.sentence)
        return [(order, desired) for order in orders]

    def _release(self, services: set[str]) -> None:
        """Done with `services` for now: their orders in progress are looked at again
        later, names queued meanwhile are handled now."""
        if not services:
            return
        self._active -= services
        now = time.monotonic()
        for service in services - self._rechecks.keys():
            delay = self.engine.observations.next_recheck(service, self.name)
            if delay is not None:
                self._rechecks[service] = now + delay
                self.engine.metrics.requeue("in_progress")
        self._wake.set()

    async def _order(self, order: ScaleOrder, desired: Desired) -> None:
        term = self.engine.term
        if not term.valid():
            return
        fields = {"service": order.service, "compute": self.name, "term": term.number}
        log.info("scaling %s on %s from %d to %d (term %d)", order.service, self.name,
                 order.observed, order.number, term.number, extra=fields)
        way = direction(order.observed, order.number)

        def event(result: str, reason: str) -> dict:
            return {"time": _now(), "service": order.service, "compute": self.name,
                    "from": order.observed, "to": order.number, "term": term.number,
                    "result": result, "reason": reason}

        observations = self.engine.observations
        try:
            count = await self.calls.order(order.service, order.number, term)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.engine.metrics.order(self.name, way, "error")
            sentence = self.calls.failure(exc, f"scaling {order.service} on {self.name}")
            if timed_out(exc):
                log.warning("scaling %s on %s to %d: no answer within connector.timeout; "
                            "the order is in progress, observed again until it is done",
                            order.service, self.name, order.number, extra=fields)
                observations.order_in_progress(order.service, self.name, order.number,
                                               event("in_progress", sentence))
            else:
                log.warning("scaling %s on %s failed: %s", order.service, self.name,
                            sentence, extra=fields)
                observations.failed_order(order.service, self.name, sentence,
                                          event("failed", sentence))
            return
        self.engine.metrics.order(self.name, way, "success")
        observations.accepted_order(order.service, self.name, order.number, count,
                                    event("ok", order_reason(desired, order)))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
