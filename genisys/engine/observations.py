"""What the leader knows of every (service, compute) pair during a term.

The compute workers write it (counts, errors, orders in progress, orders accepted, the
order events); the reconciler reads it to write the status records and the histories,
to forget deleted services and to count the services by state. Every change marks its
service dirty, so that only changed services are looked at again: an observation that
finds what was known costs no status work.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

from genisys.engine.calls import Observation
from genisys.plan import Desired, Observed, OrderCounts, open_orders, order_warnings

# Re-observing an order in progress: after this, doubling up to MAX_RECHECK.
FIRST_RECHECK = 0.5
MAX_RECHECK = 4.0


@dataclass
class InProgress:
    """An order a connector is still carrying out: one of ours that outlived
    connector.timeout, or a `target` the connector reports."""
    number: int
    since: str      # wall clock, shown in the status record
    started: float  # time.monotonic()
    recheck: float  # seconds until the next re-observation

    def shown(self) -> dict:
        return {"to": self.number, "since": self.since}


class Observations:
    def __init__(self, on_dirty: Callable[[], None]):
        self.counts: dict[tuple[str, str], int] = {}
        self.errors: dict[tuple[str, str], str] = {}
        self.in_progress: dict[tuple[str, str], InProgress] = {}
        self.accepted: OrderCounts = {}  # for the warnings (genisys.plan.order_warnings)
        self.warnings: dict[tuple[str, str], str] = {}
        # Each service's history events (orders sent, moves) since the last recording.
        self.events: dict[str, list[dict]] = {}
        self.dirty: set[str] = set()
        self._on_dirty = on_dirty

    def _touch(self, service: str) -> None:
        self.dirty.add(service)
        self._on_dirty()

    def observed(self, compute: str, observation: Observation, *, per_service: bool,
                 reports_targets: bool, poll_interval: float) -> None:
        """Take what `compute` said. An order in progress ends when the count reaches it,
        or (per-service observations only, which carry targets) when the connector names
        no target any more: at once if it is known to report targets, else after
        poll_interval."""
        now = time.monotonic()
        for service, count in observation.counts.items():
            pair = (service, compute)
            changed = self.counts.get(pair) != count or pair in self.errors
            self.counts[pair] = count
            self.errors.pop(pair, None)
            target = observation.targets.get(service)
            entry = self.in_progress.get(pair)
            if target is not None and target != count:
                if entry is None or entry.number != target:
                    self.in_progress[pair] = InProgress(target, _now(), now, FIRST_RECHECK)
            elif entry is not None and (count == entry.number or per_service and (
                    reports_targets or now - entry.started >= poll_interval)):
                del self.in_progress[pair]
            if changed or self.in_progress.get(pair) is not entry:
                self._touch(service)
        for service, sentence in observation.errors.items():
            pair = (service, compute)
            changed = self.errors.get(pair) != sentence or pair in self.counts
            self.counts.pop(pair, None)
            self.errors[pair] = sentence
            entry = self.in_progress.get(pair)
            if entry is not None and now - entry.started >= poll_interval:
                del self.in_progress[pair]  # unanswered that long: an error, not progress
                changed = True
            if changed:
                self._touch(service)

    def view(self, compute: str, services: set[str]) -> Observed:
        """`compute`'s pairs of `services`, for genisys.plan.decide."""
        observed = Observed()
        for service in services:
            pair = (service, compute)
            if pair in self.counts:
                observed.counts[pair] = self.counts[pair]
            if pair in self.in_progress:
                observed.targets[pair] = self.in_progress[pair].number
        return observed

    def of(self, service: str, computes) -> Observed:
        """The pairs of `service` on `computes`."""
        pairs = [(service, c) for c in computes]
        return Observed({p: self.counts[p] for p in pairs if p in self.counts},
                        {p: self.errors[p] for p in pairs if p in self.errors},
                        {p: self.in_progress[p].number for p in pairs if p in self.in_progress})

    def accepted_order(self, service: str, compute: str, number: int, count: int,
                       event: dict) -> None:
        pair = (service, compute)
        ordered, accepted = self.accepted.get(pair, (number, 0))
        self.accepted[pair] = (number, accepted + 1 if ordered == number else 1)
        self.counts[pair] = count
        self.errors.pop(pair, None)
        self.in_progress.pop(pair, None)
        self.note(service, event)

    def failed_order(self, service: str, compute: str, sentence: str, event: dict) -> None:
        self.errors[service, compute] = sentence
        self.in_progress.pop((service, compute), None)
        self.note(service, event)

    def order_in_progress(self, service: str, compute: str, number: int, event: dict) -> None:
        """An order that outlived connector.timeout: it may still be carried out."""
        pair = (service, compute)
        entry = self.in_progress.get(pair)
        if entry is None or entry.number != number:
            self.in_progress[pair] = InProgress(number, event["time"], time.monotonic(),
                                                FIRST_RECHECK)
        self.note(service, event)

    def next_recheck(self, service: str, compute: str) -> float | None:
        """Seconds until the pair's order in progress is observed again (backing off),
        None when none is in progress."""
        entry = self.in_progress.get((service, compute))
        if entry is None:
            return None
        delay, entry.recheck = entry.recheck, min(MAX_RECHECK, entry.recheck * 2)
        return delay

    def note(self, service: str, event: dict) -> None:
        """A history event of `service`: recorded with its next status record."""
        self.events.setdefault(service, []).append(event)
        self._touch(service)

    def take_dirty(self, limit: int) -> tuple[set[str], list[dict]]:
        """Up to `limit` services whose status record must be written, and their events
        (oldest first); the others stay for the next round."""
        dirty = set(islice(self.dirty, limit))
        self.dirty -= dirty
        return dirty, [event for service in dirty for event in self.events.pop(service, ())]

    def put_back(self, services: set[str], events: list[dict]) -> None:
        """What take_dirty gave, not recorded after all: before anything newer."""
        self.dirty |= services
        for event in reversed(events):
            self.events.setdefault(event["service"], []).insert(0, event)

    def settle(self, compute: str, services: set[str], desired: Desired) -> None:
        """After an observation, before deciding: close the order counts of `compute`'s
        pairs that reached their placement, and say which pairs ignore their orders."""
        observed = self.view(compute, services)
        mine = {(s, compute): self.accepted[s, compute] for s in services
                if (s, compute) in self.accepted}
        still = open_orders(mine, desired, observed)
        for pair in mine.keys() - still.keys():
            del self.accepted[pair]
        warnings = order_warnings(still, observed)
        for service in services:
            pair = (service, compute)
            if warnings.get(pair) != self.warnings.get(pair):
                self.warnings.pop(pair, None)
                if pair in warnings:
                    self.warnings[pair] = warnings[pair]
                self._touch(service)

    def status(self, service: str, computes) -> dict:
        """The status record of `service` (without its time)."""
        def each(book: dict) -> dict:
            return {c: book[service, c] for c in computes if (service, c) in book}
        return {"observed": each(self.counts), "errors": each(self.errors),
                "warnings": each(self.warnings),
                "in_progress": {c: entry.shown() for c, entry in each(self.in_progress).items()}}

    def _books(self) -> tuple[dict, ...]:
        """Everything kept per pair."""
        return self.counts, self.errors, self.in_progress, self.accepted, self.warnings

    def forget(self, services: set[str]) -> None:
        for book in self._books():
            for pair in [p for p in book if p[0] in services]:
                del book[pair]

    def forget_compute(self, compute: str) -> None:
        """A compute left the registry: what it said is no longer anyone's concern."""
        for book in self._books():
            for pair in [p for p in book if p[1] == compute]:
                self.dirty.add(pair[0])
                del book[pair]
        self._on_dirty()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
