"""The leader's work, lead(term): compute workers, change subscriptions, service-level work.

While leading, the Reconciler subscribes to the store's change notifications and runs
one ComputeWorker per defined compute (genisys.engine.workers: each compute's own queue,
calls, timeouts and re-observations). A change of a service's desired state enqueues
that service's name on every worker (a total not placed yet, once placed); a change of
the compute registry starts and stops workers. When the term ends, everything stops and
the subscription goes: followers do no reconcile bookkeeping.

The service-level work never waits for a connector: it only reads the local views and
writes to Consul.
- Placement fixes (a total written by another tool, a compute deleted): per service,
  one check-and-set each, a transaction's worth at once (written one by one when that
  transaction is refused); a lost one re-queues THAT service (metric
  genisys_reconcile_requeues_total{reason="conflict"}), never a full pass.
- Recording: status records of the services whose observation changed (only those that
  differ from what this leader wrote), with the order history, batched.
- Forgetting deleted services once every compute reports 0.
- A full pass every poll_interval, the safety net: every placement, orphans, retired
  connectors (genisys.retirement, in the background), the genisys_services gauges, and
  `last_cycle` for /health.

Seams for placement (issue 13):
- `decide(desired, observed)` is where the orders of a service are decided, and
  `pace(...)` where velocity limits clamp them (genisys.pacing) before they are sent.
- `placements(desired)` is where placements are fixed: failover excludes the computes
  whose worker has been failing (`self.workers[name].failing_since`) there.
"""

import asyncio
import json
import logging
import os
import time
from dataclasses import replace
from datetime import UTC, datetime

from genisys.bounded import each, slices
from genisys.connector import ConnectorClient
from genisys.engine.calls import ComputeCalls
from genisys.engine.observations import Observations
from genisys.engine.workers import ComputeWorker
from genisys.failover import Policy, settled
from genisys.failover_leader import LeaderFailover
from genisys.model import NAME_PATTERN, Compute
from genisys.pacing import Pacer
from genisys.placement import placement_total
from genisys.plan import (
    Decision,
    Desired,
    Observed,
    ScaleOrder,
    decide,
    finished_deletes,
    new_histories,
    orphans,
    placed_whole,
    placements_to_fix,
    scale_orders,
)
from genisys.retirement import Retirement
from genisys.store import ConsulError, ConsulStore, ConsulUnavailable
from genisys.velocity import Limits

log = logging.getLogger(__name__)

# The order history kept per service, newest first (README "Order history").
HISTORY_LENGTH = 50
# Only bench/reconcile.py sets this, to measure what the history costs.
RECORD_HISTORY = os.environ.get("GENISYS_BENCH_NO_HISTORY") is None
# Placement transactions in flight at once, and the operations each holds at most
# (Consul allows 64; the leader's guard and the journal entry take two).
PLACEMENT_WRITES = 16
PLACEMENT_TXN_OPS = 62
# Services whose placement is worked out before the event loop gets a turn: placing
# 100,000 at once takes seconds, and the leader's session is renewed meanwhile.
PLACING_SLICE = 1000
# Status records written per round: a round encodes and writes them in one go, and the
# event loop must get its turn well within the leader's margin (100,000 at once took
# seconds).
RECORD_SLICE = 1000
# A lost check-and-set or a failed write is tried again after this.
RETRY_DELAY = 0.1
# The fields of a status record compared to decide whether to write it again.
STATUS_FIELDS = ("observed", "errors", "warnings", "in_progress", "stepping")


class Reconciler:
    def __init__(self, store: ConsulStore, client: ConnectorClient, *, poll_interval: float,
                 concurrency: int, service_prefix: str, strategy: str,
                 failover: Policy | None = None,
                 velocity: Limits = Limits()):
        self.store = store
        self.client = client
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.service_prefix = service_prefix
        self.strategy = strategy
        self.retirement = Retirement(store, client, concurrency)
        self.failover = failover and LeaderFailover(store, failover, strategy)
        self.metrics = store.metrics
        self._last_pass: dict | None = None  # at, ok, seconds (or error)
        self.workers: dict[str, ComputeWorker] = {}
        self.term = None
        self.managed: set[str] = set()  # as of the last full pass
        self.observations = Observations(self._wake_up)
        self.pacer = Pacer(store, velocity, self._stepping_changed)
        # What this leader last wrote to each status key (STATUS_FIELDS): only changes
        # are written. Each service's order history as stored (read when a term starts).
        # Both as JSON text: 100,000 services' nested dicts cost hundreds of MB, and every
        # full garbage collection walks them.
        self._recorded: dict[str, str] = {}
        self.history: dict[str, str] = {}
        self._to_place: set[str] = set()
        # Services whose total is not placed yet: the workers get them once placed.
        self._unplaced: set[str] = set()
        # The computes whose worker may have to start, stop or restart (None: all).
        self._unsynced: set[str] | None = None
        self._retry_at: float | None = None
        self._runs: dict[str, asyncio.Task] = {}  # each worker's run()
        self._draining: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def _wake_up(self) -> None:
        self._wake.set()

    @property
    def last_cycle(self) -> dict | None:
        """For /health: the last full pass, and each worker's last full observation."""
        if self._last_pass is None:
            return None
        return {**self._last_pass, "computes": {name: worker.last_observation
                                                for name, worker in self.workers.items()}}

    def recorded(self, service: str) -> dict:
        """The status fields this leader last wrote for `service` ({}: none)."""
        return json.loads(self._recorded.get(service, "{}"))

    def _stepping_changed(self, service: str) -> None:
        self.observations.dirty.add(service)  # its status record says so
        self._wake.set()

    # -- notifications (on the event loop, no I/O) -----------------------------------------

    def _changed(self, services: set[str]) -> None:
        """A total written alone (a bulk import) goes to the placing first: each worker
        would otherwise observe it and work out its placement only to leave it out
        (`desired`), once for the total and once more for the placement."""
        services = {s for s in services if NAME_PATTERN.fullmatch(s)}
        self._to_place |= services
        unplaced = self._not_placed(services)
        self._unplaced -= services  # in place: a copy costs what is unplaced, per change
        self._unplaced |= unplaced
        self._enqueue(services - unplaced)
        self._wake.set()

    def _not_placed(self, services: set[str]) -> set[str]:
        try:
            desired, _ = self.store.desired_snapshot(services)
        except (ConsulUnavailable, ConsulError):
            return set()  # the workers' `desired` leaves them out meanwhile
        return {s for s in desired.totals if not placed_whole(desired, s)}

    def _placed(self, services: set[str]) -> None:
        """`services` need no placement fix: the workers' turn."""
        ready = self._unplaced & services
        self._unplaced -= ready
        self._enqueue(ready)

    def _enqueue(self, services: set[str]) -> None:
        """Every worker's turn to look at `services` (none, with 10,000 computes, costs
        nothing)."""
        if services:
            for worker in self.workers.values():
                worker.enqueue(services)

    def _registry_changed(self, computes: set[str]) -> None:
        if self._unsynced is not None:
            self._unsynced |= computes
        self._wake.set()

    # -- the term ------------------------------------------------------------------------

    async def lead(self, term) -> None:
        """Reconcile until cancelled (the election cancels it when leadership ends)."""
        log.info("reconciling as leader (term %s): a worker per compute, full pass every %gs",
                 term.number, self.poll_interval)
        self.term = term
        self.observations = Observations(self._wake_up)
        self.pacer.new_term()
        self._recorded, self.history, self._to_place = {}, {}, set()
        self._unplaced = set()
        self._unsynced = None
        self._retry_at = None
        if self.failover:
            self.failover.new_term()
        unsubscribe = self.store.subscribe(self._changed, self._registry_changed)
        try:
            await self._run(term)
        finally:
            unsubscribe()
            await self._stop_workers(set(self._runs))
            if self._draining is not None:
                self._draining.cancel()
            self.term = None

    async def _run(self, term) -> None:
        reason = "start"
        next_full = time.monotonic()
        while True:
            self._wake.clear()
            if self._unsynced:
                reason = reason or "computes"
            if reason is None and time.monotonic() >= next_full:
                reason = "poll"
            if reason is not None:
                ok = await self._full_pass(term, reason)
                if ok:  # after the pass: the workers need the managed services
                    await self._sync_workers()
                reason = None if ok else "retry"
                next_full = time.monotonic() + (self.poll_interval if ok
                                                else min(1.0, self.poll_interval))
            elif self._to_place and (self._retry_at is None
                                     or time.monotonic() >= self._retry_at):
                self._retry_at = None
                services, self._to_place = self._to_place, set()
                await self._place(term, services)
            await self._record(term)
            wake_at = next_full if self._retry_at is None else min(next_full, self._retry_at)
            try:
                async with asyncio.timeout(max(0.0, wake_at - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # -- workers -------------------------------------------------------------------------

    async def _sync_workers(self) -> None:
        """One worker per defined compute; a compute redefined (URL, token) gets a new one.
        Only the computes that changed are looked at (all when the term starts)."""
        names, self._unsynced = self._unsynced, set()
        try:
            if names is None:
                computes = {c.name: c for c in await self.store.list_computes()}
                names = computes.keys() | self.workers.keys()
            else:
                computes = {name: compute for name in names
                            if (compute := await self.store.get_compute(name))}
        except BaseException:
            self._unsynced = None if names is None else self._unsynced | names
            raise
        gone = {name for name in names & self.workers.keys()
                if name not in computes
                or _reached(computes[name]) != _reached(self.workers[name].compute)}
        await self._stop_workers(gone)
        for name in gone - computes.keys():
            self.observations.forget_compute(name)
        for name, compute in computes.items():
            if name not in self.workers:
                self._start_worker(compute)

    def _start_worker(self, compute: Compute) -> None:
        calls = ComputeCalls(self.client, compute.name, compute.connector, compute.token,
                             self.concurrency, self.metrics)
        worker = self.workers[compute.name] = ComputeWorker(compute, calls, self)
        self._runs[compute.name] = asyncio.create_task(worker.run(),
                                                       name=f"worker-{compute.name}")

    async def _stop_workers(self, names: set[str]) -> None:
        runs = [self._runs.pop(name) for name in names if name in self._runs]
        for name in names:
            self.workers.pop(name, None)
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    # -- what the workers ask ----------------------------------------------------------------

    def desired(self, services: set[str]) -> Desired:
        """The desired state of `services`, read whole from the local views; a service
        whose placement is being fixed is left out (its fix brings it back)."""
        desired, _ = self.store.desired_snapshot(services)
        unsettled = self.placements(desired)
        if not unsettled:
            return desired
        return replace(desired, totals={s: n for s, n in desired.totals.items()
                                        if s not in unsettled})

    def decide(self, desired: Desired, observed: Observed) -> Decision:
        """The orders for `observed` (velocity limits clamp them next, in `pace`)."""
        return decide(desired, observed)

    async def pace(self, compute: str, services: set[str], orders: list[ScaleOrder],
                   desired: Desired) -> tuple[list[ScaleOrder], dict[str, float]]:
        """`compute`'s orders for `services` that the velocity limits allow now, and when
        (time.time()) the next step of each service held back is due. A step spans every
        compute of a service: it is decided from what each compute last reported, and
        each compute's worker sends its own part."""
        concerned = {o.service for o in orders} | (services & self.pacer.statuses.keys())
        limited = self.pacer.limited(concerned, desired)
        for service in concerned - limited:
            self.pacer.settle(service)
        if not limited:
            return orders, {}
        everywhere = Observed()
        for service in limited:
            seen = self.observations.of(service, desired.computes)
            everywhere.counts.update(seen.counts)
            everywhere.targets.update(seen.targets)
        planned = scale_orders(replace(desired, totals={
            s: n for s, n in desired.totals.items() if s in limited}), everywhere)
        for service in limited - {o.service for o in planned}:
            self.pacer.settle(service)  # nothing left to order anywhere
        allowed, due = await self.pacer.allow(self.term, desired, planned, everywhere.counts)
        # An order still in progress towards the same number is awaited, not sent again.
        return ([o for o in orders if o.service not in limited]
                + [o for o in allowed if o.compute == compute
                   and everywhere.targets.get((o.service, compute)) != o.number]), due

    def placements(self, desired: Desired) -> dict[str, dict[str, int]]:
        """The placements to write (seam: failover excludes dead computes here)."""
        return {service: placement for service, placement
                in placements_to_fix(desired, self.strategy).items()
                if placement != desired.placements.get(service)}

    # -- service-level work ------------------------------------------------------------------

    async def _place(self, term, services: set[str] | None, snapshot=None) -> None:
        """Write the placement fixes of `services` (None: all, as of `snapshot`): each a
        check-and-set, a transaction's worth at once; a lost one is found by writing them
        one by one."""
        try:
            desired, indexes = snapshot or self.store.desired_snapshot(services)
        except (ConsulUnavailable, ConsulError):
            self._again(services or set(), "unavailable")
            return
        fixes = await self._fixes(desired)

        async def write(chunk: dict[str, dict[str, int]]) -> None:
            if not term.valid():
                return
            try:
                written = await self.store.leader_write(
                    term.session, {s: (p, *indexes[s]) for s, p in chunk.items()}, {})
            except (ConsulUnavailable, ConsulError) as exc:
                log.warning("cannot place %s: %s; trying again", ", ".join(chunk), exc)
                self._again(set(chunk), "unavailable")
                return
            if written:
                for service, placement in chunk.items():
                    log.info("placing %s: desired total %d, placement %s (was %s)", service,
                             desired.totals[service], _describe(placement),
                             _describe(desired.placements.get(service, {})),
                             extra={"service": service, "term": term.number})
            elif len(chunk) > 1:  # which one lost? (the others are written now)
                for service, placement in chunk.items():
                    await write({service: placement})
            else:  # another writer changed it since it was read: read it again
                service = next(iter(chunk))
                log.debug("placing %s lost its check-and-set: trying again", service)
                self.store.reread({service})
                self._again({service}, "conflict")

        # A placement written comes back through _changed, placed whole.
        self._placed((desired.totals.keys() if services is None else services) - fixes.keys())
        await each(_transactions(fixes), PLACEMENT_WRITES, write)
        if self.failover and term.valid():
            await self._fail_over(term, desired, indexes, set(fixes))

    async def _fail_over(self, term, desired: Desired, indexes: dict[str, tuple[int, int]],
                         placing: set[str]) -> None:
        """Move the share of dead computes, or bring it back (genisys.failover)."""
        now = time.monotonic()
        self.failover.sample({name: worker.failing_since
                              for name, worker in self.workers.items()}, now)
        try:
            _, events = await self.failover.apply(
                term, desired, indexes, settled(desired, Observed(self.observations.counts)),
                now, placing)
        except (ConsulUnavailable, ConsulError) as exc:
            log.warning("failover skipped, the next pass tries again: %s", exc)
            return
        except Exception:  # a bug there must not stop the placing and recording
            log.exception("failover failed, the next pass tries again")
            return
        if events:  # recorded in the history with the next status records
            for event in events:
                self.observations.note(event["service"], event)
            self._wake.set()

    async def _fixes(self, desired: Desired) -> dict[str, dict[str, int]]:
        """`placements(desired)`, PLACING_SLICE services at a time."""
        fixes = {}
        async for names in slices(desired.totals, PLACING_SLICE):
            fixes.update(self.placements(replace(desired, totals={
                s: desired.totals[s] for s in names})))
        return fixes

    def _again(self, services: set[str], reason: str) -> None:
        for _ in services:
            self.metrics.requeue(reason)
        self._to_place |= services
        self._retry_at = time.monotonic() + RETRY_DELAY

    async def _record(self, term) -> None:
        """Write the status records (and histories) of the services whose observation
        changed; forget those deleted that every compute now reports at 0."""
        services, events = self.observations.take_dirty(RECORD_SLICE)
        if not services:
            return
        if self.observations.dirty:
            self._wake.set()  # the rest in the next round, once the loop had its turn
        try:
            desired, indexes = self.store.desired_snapshot(services)
            records = {}
            for service in services:
                if service not in desired.totals and service not in self.managed:
                    continue
                status = self.observations.status(service, desired.computes)
                if service in self.pacer.statuses:  # the field only while in steps
                    status["stepping"] = self.pacer.statuses[service]
                if self._recorded.get(service) != _canonical(status):
                    records[service] = status
            histories = new_histories(
                {s: _history(self.history[s]) for s in {e["service"] for e in events}
                 if s in self.history}, events, HISTORY_LENGTH) if RECORD_HISTORY else {}
            now = _now()
            if not term.valid() or not await self.store.leader_write(
                    term.session, {}, {s: {**r, "observed_at": now} for s, r in records.items()},
                    histories):
                raise ConsulError("the leader's status write was refused")
        except (ConsulUnavailable, ConsulError) as exc:
            log.warning("cannot record the status of %d services, trying again: %s",
                        len(services), exc)
            self.observations.put_back(services, events)
            await asyncio.sleep(min(1.0, self.poll_interval))
            self._wake.set()
            return
        self._recorded.update({s: _canonical(r) for s, r in records.items()})
        self.history.update({s: _canonical(h) for s, h in histories.items()})
        await self._forget_deleted(term, desired, indexes)

    async def _forget_deleted(self, term, desired: Desired,
                              indexes: dict[str, tuple[int, int]]) -> None:
        observed = Observed(self.observations.counts)
        for service in finished_deletes(desired, observed):
            if term.valid() and await self.store.forget_service(term.session, service,
                                                                indexes[service][0]):
                log.info("service %s is at 0 on every compute: forgotten", service,
                         extra={"service": service, "term": term.number})
                self._forgotten({service})

    def _forgotten(self, services: set[str]) -> None:
        self.pacer.forget(services)
        for service in services:
            self._recorded.pop(service, None)
            self.history.pop(service, None)
        self.managed -= services
        self._unplaced -= services
        self.observations.forget(services)

    async def _full_pass(self, term, reason: str) -> bool:
        """The safety net over every service; False when it could not run."""
        started = time.monotonic()
        self.metrics.full_cycle(reason)
        try:
            if reason == "start":  # a new term goes on from what Consul holds
                self._recorded = {}
                statuses = await self.store.statuses()
                async for names in slices(statuses, RECORD_SLICE):
                    self._recorded.update({service: _canonical({
                        f: statuses[service][f] for f in STATUS_FIELDS if f in statuses[service]})
                        for service in names})
                del statuses
                self.history = await self.store.events(raw=True)
            desired, indexes = await self.store.desired_everything()
            managed = set(desired.totals)
            if self.service_prefix:
                managed |= set(await self.store.catalog_services(self.service_prefix))
            self.managed = managed
            await self._place(term, None, (desired, indexes))
            await self._forget_deleted(term, desired, indexes)
            if term.valid():
                known = await self.store.known_services()
                forgotten = await self.store.forget_orphans(
                    term.session, orphans(known, desired, managed))
                for service in forgotten:
                    log.info("service %s has no desired total any more: its status and "
                             "history are forgotten", service)
                self._forgotten(forgotten)
            if self._draining is None or self._draining.done():
                # Connectors that left the registry: stop what runs there.
                self._draining = asyncio.create_task(self.retirement.drain(term, managed))
            observed = Observed(self.observations.counts, self.observations.errors)
            states = service_states(desired, set(), observed)
            async for names in slices(managed, PLACING_SLICE):
                for state, count in service_states(desired, set(names), observed).items():
                    states[state] += count
            self.metrics.count_services(states)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must survive anything a pass meets
            if isinstance(exc, (ConsulUnavailable, ConsulError)):
                log.warning("full reconcile pass skipped, the next one will retry: %s", exc)
            else:
                log.exception("full reconcile pass failed, the next one will retry")
            self._last_pass = {"at": _now(), "ok": False, "error": str(exc)}
            self.metrics.reconciled(False, time.monotonic() - started)
            return False
        took = time.monotonic() - started
        self._last_pass = {"at": _now(), "ok": True, "seconds": round(took, 3)}
        self.metrics.reconciled(True, took)
        failing = {service for service, _ in self.observations.errors}
        log.info("full cycle: %d services on %d computes, %d with errors, reason %s "
                 "(%.0f ms)", len(managed), len(desired.computes), len(failing & managed),
                 reason, took * 1000)
        return True


def service_states(desired: Desired, managed: set[str], observed: Observed) -> dict[str, int]:
    """How many managed services are in each state, for genisys_services: failing (an
    error on some compute), converged (a desired total, and every compute runs what the
    placement gives it), paused, short (the placement holds less than the total: the
    computes' max leave no room)."""
    failing = {service for service, _ in observed.errors if service in managed}
    converged = sum(
        1 for service in desired.totals.keys() & managed - failing
        if all(observed.counts.get((service, c)) == desired.placements.get(service, {}).get(c, 0)
               for c in desired.computes))
    short = sum(1 for service in desired.totals.keys() & managed
                if placement_total(desired.placements.get(service, {})) < desired.totals[service])
    return {"managed": len(managed), "failing": len(failing), "converged": converged,
            "paused": len(desired.paused & managed), "short": short}


def _transactions(fixes: dict[str, dict[str, int]]):
    """The fixes in groups that each fit one Consul transaction (ConsulStore.leader_write:
    two operations per placement and one per compute it uses, besides the guard and the
    journal entry)."""
    chunk, size = {}, 0
    for service, placement in fixes.items():
        ops = 2 + len(placement)
        if chunk and size + ops > PLACEMENT_TXN_OPS:
            yield chunk
            chunk, size = {}, 0
        chunk[service] = placement
        size += ops
    if chunk:
        yield chunk


def _reached(compute: Compute) -> tuple[str, str | None]:
    """What a worker's calls depend on."""
    return compute.connector, compute.token


def _canonical(value) -> str:
    """JSON that equal values share."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _history(text: str) -> list[dict]:
    """A stored order history; [] when it is not one (written by hand, say)."""
    try:
        history = json.loads(text)
    except ValueError:
        return []
    return history if isinstance(history, list) else []


def _describe(placement: dict[str, int]) -> str:
    return ", ".join(f"{c}={n}" for c, n in placement.items()) or "none"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
