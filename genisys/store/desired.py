"""The desired state's part of the store: totals (Skynet's), placements, lifecycle flags
(pause, delete), the leader's statuses and order history, and forgetting a service."""

import base64
from dataclasses import replace

from genisys.bounded import slices
from genisys.plan import Desired
from genisys.store.journal import SERVICES
from genisys.store.tables import DesiredRecord
from genisys.store.transport import ConsulUnavailable, read_keys, read_prefix
from genisys.store.values import (
    MAX_ATTEMPTS,
    TXN_BYTES,
    TXN_OPS,
    Conflict,
    _from_json,
    _kv,
    _now,
    _to_json,
    _valid_names,
)

SNAPSHOT_SLICE = 2000  # services copied before the event loop gets a turn


class DesiredState:
    """ConsulStore's desired state methods."""

    async def read_desired(self, service: str) -> DesiredRecord:
        """A service's total, placement and flags, fresh from Consul in one transaction,
        with the indexes a commit must check."""
        keys = self.mirror.service_keys(service)
        known = self.mirror.services.get(service)
        present = {key for key, index in zip(keys, (known.total_index or 1,
                                                    known.placement_index or 1,
                                                    known.flags_index)) if index}
        found = await read_keys(self.consul, keys, present)
        return self.mirror.record(dict(zip(("total", "placement", "flags"),
                                           (found.get(key) for key in keys))))

    def known_desired(self, service: str) -> DesiredRecord:
        """A service's total, placement and flags as this replica last heard of them
        (ABSENT when it has not, or when its copy is not in sync with Consul)."""
        return self.mirror.services.get(service) if self.mirror.synced else ABSENT

    async def commit_desired(self, service: str, total: int, placement: dict[str, int],
                             seen: DesiredRecord, compute_indexes: dict[str, int]) -> bool:
        """Write total and placement in one transaction; False when anything changed since
        `seen` was read (either key, or a compute the placement uses)."""
        ops = [_kv("cas", self.resources_key_prefix + service, str(total), seen.total_index),
               _kv("cas", self.placements_prefix + service, _to_json(placement),
                   seen.placement_index),
               self._journal_op(SERVICES, service)]
        ops += [_kv("check-index", self.computes_prefix + name, index=index)
                for name, index in compute_indexes.items()]
        # A delete marked meanwhile refuses the commit (it re-reads and sees it).
        flags_key = self.lifecycle_prefix + service
        ops.append(_kv("check-index", flags_key, index=seen.flags_index) if seen.flags_index
                   else _kv("check-not-exists", flags_key))
        return await self._txn(ops) is not None

    def desired_snapshot(self, services: set[str] | None = None
                         ) -> tuple[Desired, dict[str, tuple[int, int]]]:
        """The desired state of `services` (None: all) from memory, and per service the
        (total, placement) ModifyIndexes for the leader's check-and-set. Costs what
        `services` holds, not what the registry holds."""
        self._check_synced()
        records = self.mirror.services.records
        names = records if services is None else (s for s in services if s in records)
        totals, placements, indexes, paused, deleting = {}, {}, {}, set(), set()
        for service in names:
            record = records[service]
            if record.total is None:
                continue  # no total, or not a count (warned when it was read)
            totals[service] = record.total
            placements[service] = record.placement
            indexes[service] = (record.total_index, record.placement_index)
            if record.flags.get("paused"):
                paused.add(service)
            if record.flags.get("deleting"):
                deleting.add(service)
        computes = self.mirror.computes
        return Desired(computes.connectors(), totals, placements, frozenset(paused),
                       frozenset(deleting), computes.specs()), indexes

    async def desired_everything(self) -> tuple[Desired, dict[str, tuple[int, int]]]:
        """desired_snapshot() of every service, SNAPSHOT_SLICE at a time with the event
        loop free in between (100,000 services take half a second): each service is
        whole, two services may be taken moments apart."""
        desired, indexes = self.desired_snapshot(set())
        async for names in slices(self.mirror.services.records, SNAPSHOT_SLICE):
            more, more_indexes = self.desired_snapshot(set(names))
            desired.totals.update(more.totals)
            desired.placements.update(more.placements)
            desired = replace(desired, paused=desired.paused | more.paused,
                              deleting=desired.deleting | more.deleting)
            indexes.update(more_indexes)
        return desired, indexes

    async def statuses(self, service: str | None = None) -> dict[str, dict]:
        """The leader's last recorded observation of `service` (None: of every service)."""
        return await self._read_json(self.status_prefix, service, dict)

    async def _read_json(self, prefix: str, service: str | None, kind: type,
                         raw: bool = False) -> dict:
        """The JSON values of type `kind` under `prefix`, by service: one service's, or
        (None) every service's, parsed a slice at a time (100,000 of them would hold the
        event loop for seconds); `raw`: every service's text, unparsed."""
        if service is not None:
            _, item = await self.consul.kv.get(prefix + service)
            value = _from_json(item.get("Value")) if item else None
            return {service: value} if isinstance(value, kind) else {}
        _, items = await read_prefix(self.consul, prefix)
        if raw:
            return {item["Key"][len(prefix):]: base64.b64decode(item.get("Value") or "")
                    .decode("utf-8", "replace") async for item in items}
        return {item["Key"][len(prefix):]: value async for item in items
                if isinstance(value := _from_json(base64.b64decode(item.get("Value") or "")),
                              kind)}

    async def service_records(self, service: str | None = None,
                              fresh: bool = False) -> dict[str, dict]:
        """Desired total, placement and last observed status of `service` (None: of every
        known service); `fresh`: `service`'s desired state read from Consul, not the view."""
        self._check_synced()
        statuses = await self.statuses(service)
        records = self.mirror.services.records
        if service is None:
            names = sorted(records.keys() | set(_valid_names(statuses, "")))
        else:
            names = [service]
        answer = {}
        for name in names:
            record = await self.read_desired(name) if fresh else self.mirror.services.get(name)
            if not record.exists and name not in statuses:
                continue
            observed = statuses.get(name, {})
            answer[name] = {
                "desired": record.total,
                "placement": record.placement,
                "observed": observed.get("observed", {}),
                "errors": observed.get("errors", {}),
                "warnings": observed.get("warnings", {}),
                "in_progress": observed.get("in_progress", {}),
                "stepping": observed.get("stepping"),
                "observed_at": observed.get("observed_at"),
                "paused": bool(record.flags.get("paused")),
                "state": "deleting" if record.flags.get("deleting") else "active",
            }
        return answer

    # -- the service lifecycle: pause, resume, delete, and forgetting -------------------

    async def set_paused(self, service: str, paused: bool) -> bool:
        """Pause or resume `service`; True when that changed its flag. Conflict while it
        is being deleted."""
        return await self.change_flags(
            service, lambda flags: None if bool(flags.get("paused")) == paused
            else {**flags, "paused": paused})

    async def change_flags(self, service: str, change) -> bool:
        """Replace `service`'s lifecycle flags with change(flags) (None: leave them), by
        check-and-set; True when they were written. Conflict while it is being deleted."""
        key = self.lifecycle_prefix + service
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            flags = _from_json(item and item.get("Value"))
            flags = flags if isinstance(flags, dict) else {}
            if flags.get("deleting"):
                raise Conflict(f"service {service!r} is being deleted.")
            changed = change(flags)
            if changed is None:
                return False
            if await self._txn([_kv("cas", key, _to_json(changed),
                                    item["ModifyIndex"] if item else 0),
                                self._journal_op(SERVICES, service)]) is not None:
                return True
        raise ConsulUnavailable(f"could not update {service}: too many concurrent changes")

    async def delete_service(self, service: str) -> bool:
        """Mark `service` deleting: total 0, empty placement and the flag, in one
        transaction (a scale racing with it fails its check-and-set, re-reads, and is
        refused). True when it was marked now, False when it already was."""
        key = self.lifecycle_prefix + service
        for _ in range(MAX_ATTEMPTS):
            seen = await self.read_desired(service)
            if seen.flags.get("deleting"):
                return False
            written = await self._txn([
                _kv("cas", self.resources_key_prefix + service, "0", seen.total_index),
                _kv("cas", self.placements_prefix + service, _to_json({}), seen.placement_index),
                # A delete clears the pause: its scale to 0 must be sent.
                _kv("cas", key, _to_json({"paused": False, "deleting": _now()}),
                    seen.flags_index),
                self._journal_op(SERVICES, service)])
            if written is not None:
                return True
        raise ConsulUnavailable(f"could not delete {service}: too many concurrent changes")

    async def forget_service(self, session: str, service: str, total_index: int) -> bool:
        """The leader forgets a deleted service: every key it has, at once, only if its
        total is still the one the leader saw at 0."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        ops = [guard, _kv("delete-cas", self.resources_key_prefix + service, index=total_index),
               self._journal_op(SERVICES, service)]
        ops += [_kv("delete", prefix + service) for prefix in self._own_prefixes()]
        return await self._txn(ops) is not None

    async def forget_orphans(self, session: str, services: set[str]) -> set[str]:
        """Delete the keys of services whose total another tool removed (only if it is
        still absent); the services forgotten."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        forgotten = set()
        for service in sorted(services):
            ops = [guard, _kv("check-not-exists", self.resources_key_prefix + service),
                   self._journal_op(SERVICES, service)]
            ops += [_kv("delete", prefix + service) for prefix in self._own_prefixes()]
            if await self._txn(ops) is not None:
                forgotten.add(service)
        return forgotten

    def _own_prefixes(self) -> tuple[str, ...]:
        """Where Genisys keeps a service's keys (the total is Skynet's)."""
        return (self.placements_prefix, self.status_prefix, self.events_prefix,
                self.lifecycle_prefix, self.failover_prefix, self.steps_prefix)

    async def known_services(self) -> set[str]:
        """Services with a placement, lifecycle flags, a status or a history (the last two
        read as key names only: no values)."""
        known = {name for name, record in self.mirror.services.records.items()
                 if record.placement_index or record.flags_index}
        for prefix in (self.status_prefix, self.events_prefix):
            _, keys = await self.consul.kv.get(prefix, keys=True, separator="/")
            known.update(_valid_names(keys or (), prefix))
        return known

    # -- order history ------------------------------------------------------------------

    async def events(self, service: str | None = None, raw: bool = False) -> dict:
        """The order history of `service` (None: of every service), newest first; `raw`:
        as the JSON text stored, unchecked."""
        return await self._read_json(self.events_prefix, service, list, raw)


    async def leader_write(self, session: str, placements: dict[str, tuple[dict, int, int]],
                           statuses: dict[str, dict],
                           events: dict[str, list[dict]] | None = None) -> bool:
        """The leader's writes, each transaction guarded by its hold on the lock.

        placements: service -> (placement, total ModifyIndex, placement ModifyIndex): a
        placement is written only if neither key changed since the leader read them.
        events: service -> its whole order history, written with its status.
        Returns False when a transaction was refused (lock lost, or a key changed).
        """
        groups = []
        computes = self.mirror.computes
        for service, (placement, total_index, placement_index) in placements.items():
            group = [_kv("check-index", self.resources_key_prefix + service, index=total_index),
                     _kv("cas", self.placements_prefix + service, _to_json(placement),
                         placement_index)]
            # As a scale request does: a compute deleted or marked meanwhile refuses it.
            group += [_kv("check-index", self.computes_prefix + c,
                          index=stored.modify_index if (stored := computes.get(c)) else 0)
                      for c in placement]
            groups.append(group)
        events = events or {}
        for service in statuses.keys() | events.keys():
            group = []
            if service in statuses:
                group.append(_kv("set", self.status_prefix + service,
                                 _to_json(statuses[service])))
            if service in events:
                group.append(_kv("set", self.events_prefix + service,
                                 _to_json(events[service])))
            groups.append(group)
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        ok = True
        # Consul allows 64 operations and 512 KiB per transaction; a placement's checks,
        # and a status's history, stay with it. One journal entry names the placements of
        # a transaction (the guard and it: two operations).
        batch: list[dict] = []
        size = 0
        for group in groups + [None]:
            group_size = group and sum(len(op["KV"].get("Value", "")) for op in group)
            if group is None or len(batch) + len(group) > TXN_OPS - 2 \
                    or size + group_size > TXN_BYTES - 4096:
                if batch:
                    placed = [op["KV"]["Key"][len(self.placements_prefix):] for op in batch
                              if op["KV"]["Verb"] == "cas"
                              and op["KV"]["Key"].startswith(self.placements_prefix)]
                    journal = [self._journal_batch_op(placed)] if placed else []
                    ok = await self._txn([guard, *batch, *journal]) is not None and ok
                batch, size = [], 0
            if group is not None:
                batch.extend(group)
                size += group_size
        return ok
