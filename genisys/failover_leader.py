"""The leader's side of failover (genisys/failover.py decides): each compute's health as
sampled from its connector calls, the records of what was moved, and their writes.

The records live in Consul (genisys/failover/{svc}), written with the placement they
explain in one transaction guarded by the leader's lock: a new leader reads them at the
start of its term and finishes a return its predecessor started. Health is this
leader's own: a new leader waits failover_after (or failback_after) of its own
observation before it moves anything.
"""

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from genisys.failover import Decision, Health, Policy, decide, track
from genisys.plan import Desired

log = logging.getLogger(__name__)


class LeaderFailover:
    def __init__(self, store, policy: Policy, strategy: str):
        self.store = store
        self.policy = policy
        self.strategy = strategy
        self.health: dict[str, Health] = {}
        self.records: dict[str, dict[str, int]] | None = None  # read once per term

    def new_term(self) -> None:
        self.health, self.records = {}, None

    def sample(self, failing_since: Mapping[str, float | None], now: float) -> None:
        """Note each compute's `failing_since` (None: its connector answers)."""
        self.health = {compute: track(self.health.get(compute), since, now)
                       for compute, since in failing_since.items()}

    async def apply(self, term, desired: Desired, indexes: Mapping[str, tuple[int, int]],
                    settled: set[str], now: float, placing: set[str] = frozenset()
                    ) -> tuple[Desired, list[dict]]:
        """Move what failover moves now: write it, log one sentence per move, and return
        the desired state with the new placements and one history event per move. The
        services in `placing` are being placed again: left to that."""
        if self.records is None:
            self.records = await self.store.failover_records()
        decision = decide(replace(desired, totals={s: n for s, n in desired.totals.items()
                                                   if s not in placing}),
                          self.health, self.records, settled, self.strategy, self.policy, now)
        changes = {service: (decision.placements.get(service),
                             decision.records.get(service, self.records.get(service, {})),
                             *indexes[service])
                   for service in decision.placements.keys() | decision.records.keys()}
        if not changes:
            return desired, []
        events, placements = [], {}
        async for written in self.store.failover_write(term.session, changes):
            events += self._written(term, decision, written)
            placements.update((s, p) for s, p in decision.placements.items() if s in written)
            if not term.valid():
                break  # every further write would be refused
        return replace(desired, placements={**desired.placements, **placements}), events

    def _written(self, term, decision: Decision, written: set[str]) -> list[dict]:
        """Note the records of the services just written, log their moves, and return
        their history events."""
        for service in written & decision.records.keys():
            if decision.records[service]:
                self.records[service] = decision.records[service]
            else:
                self.records.pop(service, None)
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        events = []
        for move in decision.moves:
            if move.service in written:
                log.info("%s", move.sentence, extra={
                    "service": move.service, "compute": move.compute, "term": term.number})
                events.append({"time": at, "service": move.service, "compute": move.compute,
                               "from": move.before, "to": move.after, "term": term.number,
                               "result": "moved", "reason": move.sentence})
        return events
