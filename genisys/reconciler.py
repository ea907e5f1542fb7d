"""The leader's loop: observe -> plan -> act, level-triggered.

A full cycle runs every `connector.poll_interval`; a change under the resources or
placements prefixes wakes the loop at once for just the services that changed, so a
scale request reaches its connector in milliseconds. Each cycle reads one snapshot,
decides with pure functions (genisys.plan), then acts. A failing cycle is logged and
the next one runs: the loop never dies.

Containment: whatever one (service, compute) pair meets, an exception of any type
included, is recorded as that pair's error and every other pair goes on. A pair whose
connector accepts orders but keeps reporting another count gets a warning instead.

Every order is recorded in the service's order history, written with its status. A
paused service is observed but gets no order; a deleting one is scaled to 0, then
forgotten (genisys.plan decides both).
"""

import asyncio
import logging
import math
import os
import time
from dataclasses import replace
from datetime import UTC, datetime

from genisys.connector import ConnectorClient, ConnectorError
from genisys.jsonbody import excerpt
from genisys.metrics import direction
from genisys.pacing import Pacer
from genisys.plan import (
    Desired,
    Observed,
    OrderCounts,
    ScaleOrder,
    finished_deletes,
    new_histories,
    open_orders,
    order_reason,
    order_warnings,
    orphans,
    placements_to_fix,
    scale_orders,
)
from genisys.retirement import Retirement
from genisys.store import ConsulError, ConsulStore, ConsulUnavailable
from genisys.velocity import Limits

log = logging.getLogger(__name__)

# The longest sentence recorded per pair: a status record holds one per compute, and the
# leader writes up to 62 records per Consul transaction (at most 512 KiB).
MAX_SENTENCE = 300
# The order history kept per service, newest first (README "Order history").
HISTORY_LENGTH = 50
# Only bench/reconcile.py sets this, to measure what the history costs.
RECORD_HISTORY = os.environ.get("GENISYS_BENCH_NO_HISTORY") is None
# A service in steps is looked at again at its next step, but not sooner than this: with
# no cooldown, the next step waits for the connector to report the last one.
STEP_RECHECK = 0.5


class Reconciler:
    def __init__(self, store: ConsulStore, client: ConnectorClient, *, poll_interval: float,
                 concurrency: int, service_prefix: str, strategy: str,
                 velocity: Limits = Limits()):
        self.store = store
        self.client = client
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.service_prefix = service_prefix
        self.strategy = strategy
        self.retirement = Retirement(store, client, concurrency)
        self.pacer = Pacer(store, velocity)
        self._steps_due: dict[str, float] = {}  # service -> its next step (time.time())
        self.metrics = store.metrics
        self.last_cycle: dict | None = None   # for /health: when the last cycle completed
        # What this leader last wrote to each status key: only changes are written, and
        # comparing with this costs nothing per unchanged service.
        self._recorded: dict[str, tuple[dict, dict, dict]] | None = None
        # Orders accepted per pair while it reports another count: for the warnings.
        self._orders: OrderCounts = {}
        self._unexpected: set[str] = set()  # unexpected errors logged this term
        # Each service's order history as stored in Consul (read at the start of a term).
        self._history: dict[str, list[dict]] = {}
        self._dirty: set[str] = set()
        self._full_due = True
        self._wake = asyncio.Event()

    def _changed(self, services: set[str]) -> None:
        self._dirty.update(services)
        self._wake.set()

    def _request_full(self) -> None:
        self._full_due = True
        self._wake.set()

    async def lead(self, term) -> None:
        """Reconcile until cancelled (the election cancels it when leadership ends)."""
        log.info("reconciling as leader (term %s), full cycle every %gs", term.number,
                 self.poll_interval)
        unsubscribe = self.store.subscribe(self._changed, self._request_full)
        try:
            await self._reconcile(term)
        finally:
            unsubscribe()

    async def _reconcile(self, term) -> None:
        self._full_due = True
        self._recorded = None
        self._orders, self._unexpected = {}, set()
        self.pacer.new_term()
        self._steps_due = {}
        next_full = time.monotonic()
        while True:
            due = {s for s, at in self._steps_due.items() if at <= time.time()}
            for service in due:
                del self._steps_due[service]
            self._dirty |= due
            now = time.monotonic()
            if now >= next_full:
                self._full_due = True
            if self._full_due:
                self._full_due, self._dirty = False, set()
                next_full = now + self.poll_interval
                services = None
            else:
                services, self._dirty = self._dirty, set()
            if services is None or services:
                await self._run_cycle(term, services)
            self._wake.clear()
            if self._dirty or self._full_due:
                continue
            try:
                # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow the
                # election's cancellation when the wake-up happens at the same moment.
                step = min(self._steps_due.values(), default=math.inf) - time.time()
                async with asyncio.timeout(max(0.0, min(next_full - time.monotonic(), step))):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _run_cycle(self, term, services: set[str] | None) -> None:
        started = time.monotonic()
        try:
            summary = await self.cycle(term, services)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must survive anything a cycle meets
            if isinstance(exc, (ConsulUnavailable, ConsulError)):
                log.warning("reconcile cycle skipped, the next one will retry: %s", exc)
            else:
                log.exception("reconcile cycle failed, the next one will retry")
            if services:
                self._dirty |= services
            self.last_cycle = {"at": _now(), "ok": False, "error": str(exc)}
            self.metrics.reconciled(False, time.monotonic() - started)
            await asyncio.sleep(min(1.0, self.poll_interval))
            return
        took = time.monotonic() - started
        self.last_cycle = {"at": _now(), "ok": True, "seconds": round(took, 3)}
        self.metrics.reconciled(True, took)
        # Quick cycles already logged their orders one by one.
        log.log(logging.INFO if services is None else logging.DEBUG, "%s cycle: %s (%.0f ms)",
                "full" if services is None else "quick", summary, took * 1000)

    async def cycle(self, term, services: set[str] | None = None) -> str:
        """One observe -> plan -> act pass over `services` (None: every managed service)."""
        desired, indexes = self.store.desired_snapshot(services)
        # From the same view as the snapshot: no await comes between the two reads.
        tokens = {c.name: c.token for c in await self.store.list_computes() if c.token}
        if self._recorded is None:  # a new term: start from what Consul holds
            self._recorded = {service: (status.get("observed"), status.get("errors"),
                                        status.get("warnings"), status.get("stepping"))
                              for service, status in (await self.store.statuses()).items()}
            # The history goes on where the previous leader left it.
            self._history = await self.store.events()
        managed = set(desired.totals)
        if services is None and self.service_prefix:
            managed |= set(await self.store.catalog_services(self.service_prefix))

        fixes = placements_to_fix(desired, self.strategy)
        if fixes:
            for service, placement in fixes.items():
                log.info("placing %s: desired total %d, placement %s (was %s)", service,
                         desired.totals[service], _describe(placement),
                         _describe(desired.placements.get(service, {})),
                         extra={"service": service, "term": term.number})
            desired = replace(desired, placements={**desired.placements, **fixes})

        # One bulk call per compute beats many single ones once a burst of changes
        # touches more services than can be asked at once.
        bulk = services is None or len(managed) >= self.concurrency
        observed = await self.observe(desired.computes, managed, bulk=bulk, tokens=tokens)
        orders = scale_orders(desired, observed)
        # From what the connectors report, not from their answers to this cycle's orders.
        self._orders = open_orders(self._orders, desired, observed)
        warnings = order_warnings(self._orders, observed)

        if not term.valid():
            return f"no longer leading: dropped {len(orders)} orders"
        if fixes and not await self.store.leader_write(
                term.session, {s: (p, *indexes[s]) for s, p in fixes.items()}, {}):
            self._request_full()  # someone changed these services meanwhile: read again
            return "placements changed during the cycle; starting over"
        # Velocity limits: the orders allowed now, their step recorded in Consul first.
        orders, due = await self.pacer.allow(term, desired, orders, observed.counts)
        for service, at in due.items():
            self._steps_due[service] = max(at, time.time() + STEP_RECHECK)
        events = await self.act(orders, desired, observed, term, tokens)
        statuses = self._changed_statuses(desired, managed, observed, warnings)
        histories = (new_histories(self._history, events, HISTORY_LENGTH)
                     if RECORD_HISTORY else {})
        if term.valid() and await self.store.leader_write(term.session, {}, statuses,
                                                          histories):
            self._recorded.update((s, (v["observed"], v["errors"], v["warnings"],
                                       v["stepping"])) for s, v in statuses.items())
            self._history.update(histories)
        await self._forget(term, desired, observed, indexes, managed, full=services is None)
        if services is None:  # connectors that left the registry: stop what runs there
            await self.retirement.drain(term, managed)
            self.metrics.count_services(service_states(desired, managed, observed))
        failed = len({key[0] for key in observed.errors})
        return (f"{len(managed)} services on {len(desired.computes)} computes, "
                f"{failed} with errors, {len(orders)} orders")

    async def observe(self, computes: dict[str, str], services: set[str],
                      bulk: bool, tokens: dict[str, str] | None = None) -> Observed:
        """Ask every compute for every service's count; one failure never blocks the others."""
        observed = Observed()
        if not services:
            return observed

        async def one_compute(compute: str, url: str) -> None:
            limit = asyncio.Semaphore(self.concurrency)
            counts = None
            token = (tokens or {}).get(compute)
            if bulk:
                try:
                    counts = await self._timed(compute, "bulk_status",
                                               self.client.bulk_status(url, token))
                except Exception as exc:
                    for service in services:
                        observed.errors[service, compute] = self._failure(
                            exc, f"observing {compute}")
                    return
            if counts is not None:
                for service in services:
                    observed.counts[service, compute] = counts.get(service, 0)
                return

            async def one_service(service: str) -> None:
                async with limit:
                    try:
                        observed.counts[service, compute] = await self._timed(
                            compute, "status", self.client.status(url, service, token))
                    except Exception as exc:
                        observed.errors[service, compute] = self._failure(
                            exc, f"observing {service} on {compute}")

            await asyncio.gather(*(one_service(s) for s in services))

        await asyncio.gather(*(one_compute(c, url) for c, url in computes.items()))
        return observed

    async def act(self, orders: list[ScaleOrder], desired: Desired, observed: Observed,
                  term, tokens: dict[str, str] | None = None) -> list[dict]:
        """Send the orders, all computes in parallel; record what each answered. Returns
        one event per order for the order history."""
        limits, events = {}, []

        def event(order: ScaleOrder, result: str, reason: str) -> None:
            events.append({"time": _now(), "service": order.service, "compute": order.compute,
                           "from": order.observed, "to": order.number, "term": term.number,
                           "result": result, "reason": reason})

        async def send(order: ScaleOrder, url: str) -> None:
            async with limits.setdefault(order.compute, asyncio.Semaphore(self.concurrency)):
                fields = {"service": order.service, "compute": order.compute,
                          "term": term.number}
                log.info("scaling %s on %s from %d to %d (term %d)", order.service,
                         order.compute, order.observed, order.number, term.number, extra=fields)
                pair = (order.service, order.compute)
                way = direction(order.observed, order.number)
                try:
                    count = await self._timed(order.compute, "scale", self.client.order(
                        url, order.service, order.number, term, (tokens or {}).get(order.compute)))
                except Exception as exc:
                    self.metrics.order(order.compute, way, "error")
                    observed.errors[pair] = self._failure(
                        exc, f"scaling {order.service} on {order.compute}")
                    log.warning("scaling %s on %s failed: %s", order.service, order.compute,
                                observed.errors[pair], extra=fields)
                    event(order, "failed", observed.errors[pair])
                    return
                self.metrics.order(order.compute, way, "success")
                event(order, "ok", order_reason(desired, order))
                ordered, accepted = self._orders.get(pair, (order.number, 0))
                self._orders[pair] = (order.number,
                                      accepted + 1 if ordered == order.number else 1)
                observed.counts[pair] = count

        await asyncio.gather(*(send(o, desired.computes[o.compute]) for o in orders))
        return events

    async def _forget(self, term, desired: Desired, observed: Observed,
                      indexes: dict[str, tuple[int, int]], managed: set[str],
                      full: bool) -> None:
        """Forget deleted services once every compute reports 0, and (on full cycles) the
        keys of services whose total another tool removed."""
        gone = set()
        for service in finished_deletes(desired, observed):
            if term.valid() and await self.store.forget_service(term.session, service,
                                                                indexes[service][0]):
                log.info("service %s is at 0 on every compute: forgotten", service,
                         extra={"service": service, "term": term.number})
                gone.add(service)
        if full and term.valid():
            known = await self.store.known_services()
            forgotten = await self.store.forget_orphans(term.session,
                                                        orphans(known, desired, managed))
            for service in forgotten:
                log.info("service %s has no desired total any more: its status and history "
                         "are forgotten", service)
            gone |= forgotten
        self.pacer.forget(gone)
        for service in gone:
            self._recorded.pop(service, None)
            self._history.pop(service, None)
        if gone:
            self._orders = {pair: n for pair, n in self._orders.items() if pair[0] not in gone}

    async def _timed(self, compute: str, call: str, request):
        """Await a connector call, recording its duration and, if it fails, its kind."""
        started = time.monotonic()
        try:
            return await request
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.connector_error(compute, getattr(exc, "kind", "unexpected"))
            raise
        finally:
            self.metrics.connector_call(compute, call, time.monotonic() - started)

    def _changed_statuses(self, desired: Desired, managed: set[str], observed: Observed,
                          warnings: dict[tuple[str, str], str]) -> dict[str, dict]:
        """Status records that differ from what this leader last wrote: only those."""
        changed = {}
        for service in managed:
            status = {
                "observed": {c: observed.counts[service, c] for c in desired.computes
                             if (service, c) in observed.counts},
                "errors": {c: observed.errors[service, c] for c in desired.computes
                           if (service, c) in observed.errors},
                "warnings": {c: warnings[service, c] for c in desired.computes
                             if (service, c) in warnings},
                "stepping": self.pacer.statuses.get(service),
            }
            if self._recorded.get(service) != (status["observed"], status["errors"],
                                               status["warnings"], status["stepping"]):
                changed[service] = {**status, "observed_at": _now()}
        return changed

    def _failure(self, exc: Exception, doing: str) -> str:
        """The sentence recorded for a pair, short. Anything but a ConnectorError is a bug:
        its traceback is logged once per term, not once per pair and cycle."""
        if isinstance(exc, ConnectorError):
            return excerpt(str(exc), MAX_SENTENCE)
        sentence = f"unexpected error: {type(exc).__name__}: {excerpt(str(exc))}"
        if sentence not in self._unexpected:
            self._unexpected.add(sentence)
            log.error("%s failed unexpectedly; recorded for that pair only", doing,
                      exc_info=exc)
        return sentence


def service_states(desired: Desired, managed: set[str], observed: Observed) -> dict[str, int]:
    """How many managed services are in each state, for genisys_services: failing (an
    error on some compute), converged (a desired total, and every compute runs what the
    placement gives it), paused."""
    failing = {service for service, _ in observed.errors if service in managed}
    converged = sum(
        1 for service in desired.totals.keys() & managed - failing
        if all(observed.counts.get((service, c)) == desired.placements.get(service, {}).get(c, 0)
               for c in desired.computes))
    return {"managed": len(managed), "failing": len(failing), "converged": converged,
            "paused": len(desired.paused & managed)}


def _describe(placement: dict[str, int]) -> str:
    return ", ".join(f"{c}={n}" for c, n in placement.items()) or "none"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
