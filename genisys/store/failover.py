"""Failover's part of the store: per service, what was moved away from each dead compute
(genisys/failover.py), written with the placement it explains."""

from collections.abc import AsyncIterator

from genisys.store.journal import SERVICES
from genisys.store.values import TXN_OPS, _from_json, _kv, _to_json


class FailoverRecords:
    """ConsulStore's failover methods: the records under genisys/failover/{svc}."""

    @property
    def failover_prefix(self) -> str:
        return f"{self.key_prefix}failover/"

    async def failover_records(self) -> dict[str, dict[str, int]]:
        """Per service, the count moved away from each compute that has not come back."""
        _, items = await self.consul.kv.get(self.failover_prefix, recurse=True)
        return {item["Key"][len(self.failover_prefix):]: record for item in items or ()
                if isinstance(record := _from_json(item.get("Value")), dict)}

    async def failover_write(self, session: str,
                             changes: dict[str, tuple[dict | None, dict, int, int]]
                             ) -> AsyncIterator[set[str]]:
        """Write each service's new placement (None: unchanged) with its failover record
        ({}: deleted) in one transaction, guarded by the leader's lock and, as the
        leader's other placement writes, by the indexes of the total and the placement
        it read. changes: service -> (placement, record, total index, placement index).
        Yields the services each transaction wrote, one transaction after the other (a
        burst must not starve the leader's own session checks); a service that changed
        meanwhile is refused alone."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        computes = self.mirror.computes

        def ops_of(service, placement, record, total_index, placement_index) -> list[dict]:
            key = self.failover_prefix + service
            ops = [_kv("set", key, _to_json(record)) if record else _kv("delete", key)]
            if placement is not None:
                ops += [_kv("check-index", self.resources_key_prefix + service,
                            index=total_index),
                        _kv("cas", self.placements_prefix + service, _to_json(placement),
                            placement_index),
                        self._journal_op(SERVICES, service)]
                ops += [_kv("check-index", self.computes_prefix + c,
                            index=stored.modify_index if (stored := computes.get(c)) else 0)
                        for c in placement]
            return ops

        async def write(services: list[str]) -> bool:
            return await self._txn([guard] + [op for s in services
                                              for op in ops_of(s, *changes[s])]) is not None

        batches: list[list[str]] = [[]]
        size = 0
        for service in changes:
            ops = len(ops_of(service, *changes[service]))
            if batches[-1] and size + ops > TXN_OPS - 1:
                batches.append([])
                size = 0
            batches[-1].append(service)
            size += ops
        for batch in filter(None, batches):
            if await write(batch):
                yield set(batch)
            elif len(batch) > 1:  # one of them changed meanwhile: the others go on alone
                yield {service for service in batch if await write([service])}
