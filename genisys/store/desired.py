"""The desired state's part of the store: totals (Skynet's), placements, lifecycle flags
(pause, delete), the leader's statuses and order history, and forgetting a service."""

import asyncio
from dataclasses import dataclass, field

from genisys.plan import Desired
from genisys.store.transport import ConsulUnavailable
from genisys.store.values import (
    MAX_ATTEMPTS,
    TXN_BYTES,
    TXN_OPS,
    Conflict,
    _from_json,
    _kv,
    _now,
    _parse_placement,
    _parse_total,
    _to_json,
    _valid_names,
    _warn_once,
)


@dataclass(frozen=True)
class DesiredRecord:
    """A service's desired total and placement, with their ModifyIndexes (0: absent)."""
    total: int | None
    total_index: int
    placement: dict[str, int]
    placement_index: int
    flags: dict = field(default_factory=dict)  # lifecycle flags: paused, deleting
    flags_index: int = 0

    @property
    def index(self) -> int:
        """What a scale's If-Match checks: the later of the two ModifyIndexes."""
        return max(self.total_index, self.placement_index)


class DesiredState:
    """ConsulStore's desired state methods."""

    async def read_desired(self, service: str) -> DesiredRecord:
        """A service's total and placement, with the indexes a commit must check."""
        # At once: the shorter the time from read to commit, the fewer lost races.
        (_, total), (_, placement), (_, flags) = await asyncio.gather(*(
            self.consul.kv.get(prefix + service) for prefix in (
                self.resources_key_prefix, self.placements_prefix, self.lifecycle_prefix)))
        flag_values = _from_json(flags and flags.get("Value"))
        return DesiredRecord(
            total=_parse_total(total and total.get("Value")),
            total_index=total["ModifyIndex"] if total else 0,
            placement=_parse_placement(placement and placement.get("Value")),
            placement_index=placement["ModifyIndex"] if placement else 0,
            flags=flag_values if isinstance(flag_values, dict) else {},
            flags_index=flags["ModifyIndex"] if flags else 0)

    async def commit_desired(self, service: str, total: int, placement: dict[str, int],
                             seen: DesiredRecord, compute_indexes: dict[str, int]) -> bool:
        """Write total and placement in one transaction; False when anything changed since
        `seen` was read (either key, or a compute the placement uses)."""
        ops = [_kv("cas", self.resources_key_prefix + service, str(total), seen.total_index),
               _kv("cas", self.placements_prefix + service, _to_json(placement),
                   seen.placement_index)]
        ops += [_kv("check-index", self.computes_prefix + name, index=index)
                for name, index in compute_indexes.items()]
        # A delete marked meanwhile refuses the commit (it re-reads and sees it).
        flags_key = self.lifecycle_prefix + service
        ops.append(_kv("check-index", flags_key, index=seen.flags_index) if seen.flags_index
                   else _kv("check-not-exists", flags_key))
        written = await self._txn(ops)
        if written is None:
            return False
        self.resources_view.write_through(written[:1])
        self.placements_view.write_through(written[1:2])
        return True

    def desired_snapshot(self, services: set[str] | None = None
                         ) -> tuple[Desired, dict[str, tuple[int, int]]]:
        """The desired state of `services` (None: all) from the views, and per service
        the (total, placement) ModifyIndexes for the leader's check-and-set."""
        self._check_synced()
        defined = [c for c, _ in self._view_computes()[0]]
        computes = {c.name: c.connector for c in defined}
        resources = self.resources_view.entries
        if services is None:
            names = _valid_names(resources, self.resources_key_prefix)
        else:
            names = [s for s in _valid_names(
                [self.resources_key_prefix + s for s in services], self.resources_key_prefix)
                if self.resources_key_prefix + s in resources]
        totals, placements, indexes, paused, deleting = {}, {}, {}, set(), set()
        for service in names:
            entry = resources[self.resources_key_prefix + service]
            total = _parse_total(entry.value)
            if total is None:
                _warn_once(f"ignoring {entry.key}: its value {entry.value[:40]!r} is not a count")
                continue
            totals[service] = total
            placement = self.placements_view.entries.get(self.placements_prefix + service)
            placements[service] = _parse_placement(placement and placement.value)
            indexes[service] = (entry.modify_index, placement.modify_index if placement else 0)
            flags = self._flags(service)
            if flags.get("paused"):
                paused.add(service)
            if flags.get("deleting"):
                deleting.add(service)
        return Desired(computes, totals, placements, frozenset(paused), frozenset(deleting),
                       {c.name: c.spec for c in defined}), indexes

    def _flags(self, service: str) -> dict:
        """The service's lifecycle flags from the view: {"paused": bool, "deleting": time}."""
        entry = self.lifecycle_view.entries.get(self.lifecycle_prefix + service)
        flags = _from_json(entry and entry.value)
        return flags if isinstance(flags, dict) else {}

    async def statuses(self, service: str | None = None) -> dict[str, dict]:
        """The leader's last recorded observation of `service` (None: of every service)."""
        if service is None:
            _, items = await self.consul.kv.get(self.status_prefix, recurse=True)
        else:
            _, item = await self.consul.kv.get(self.status_prefix + service)
            items = [item] if item else []
        return {item["Key"][len(self.status_prefix):]: status for item in items or ()
                if isinstance(status := _from_json(item.get("Value")), dict)}

    async def service_records(self, service: str | None = None) -> dict[str, dict]:
        """Desired total, placement and last observed status of `service` (None: of every
        known service)."""
        self._check_synced()
        statuses = await self.statuses(service)
        if service is None:
            names = sorted({name for view, prefix in (
                (self.resources_view, self.resources_key_prefix),
                (self.placements_view, self.placements_prefix),
                (self.lifecycle_view, self.lifecycle_prefix))
                for name in _valid_names(view.entries, prefix)}
                | set(_valid_names(statuses, "")))
        else:
            names = [service]
        records = {}
        for name in names:
            total = self.resources_view.entries.get(self.resources_key_prefix + name)
            placement = self.placements_view.entries.get(self.placements_prefix + name)
            flags = self._flags(name)
            if total is None and placement is None and name not in statuses and not flags:
                continue
            observed = statuses.get(name, {})
            records[name] = {
                "desired": _parse_total(total and total.value),
                "placement": _parse_placement(placement and placement.value),
                "observed": observed.get("observed", {}),
                "errors": observed.get("errors", {}),
                "warnings": observed.get("warnings", {}),
                "in_progress": observed.get("in_progress", {}),
                "observed_at": observed.get("observed_at"),
                "paused": bool(flags.get("paused")),
                "state": "deleting" if flags.get("deleting") else "active",
            }
        return records

    # -- the service lifecycle: pause, resume, delete, and forgetting -------------------

    async def set_paused(self, service: str, paused: bool) -> bool:
        """Pause or resume `service`; True when that changed its flag. Conflict while it
        is being deleted."""
        key = self.lifecycle_prefix + service
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            flags = _from_json(item and item.get("Value"))
            flags = flags if isinstance(flags, dict) else {}
            if flags.get("deleting"):
                raise Conflict(f"service {service!r} is being deleted.")
            if bool(flags.get("paused")) == paused:
                return False
            written = await self._txn([_kv("cas", key, _to_json({**flags, "paused": paused}),
                                           item["ModifyIndex"] if item else 0)])
            if written is not None:
                self.lifecycle_view.write_through(written)
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
                    seen.flags_index)])
            if written is not None:
                self.resources_view.write_through(written[:1])
                self.placements_view.write_through(written[1:2])
                self.lifecycle_view.write_through(written[2:])
                return True
        raise ConsulUnavailable(f"could not delete {service}: too many concurrent changes")

    async def forget_service(self, session: str, service: str, total_index: int) -> bool:
        """The leader forgets a deleted service: every key it has, at once, only if its
        total is still the one the leader saw at 0."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        ops = [guard, _kv("delete-cas", self.resources_key_prefix + service, index=total_index)]
        ops += [_kv("delete", prefix + service) for prefix in self._own_prefixes()]
        return await self._txn(ops) is not None

    async def forget_orphans(self, session: str, services: set[str]) -> set[str]:
        """Delete the keys of services whose total another tool removed (only if it is
        still absent); the services forgotten."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        forgotten = set()
        for service in sorted(services):
            ops = [guard, _kv("check-not-exists", self.resources_key_prefix + service)]
            ops += [_kv("delete", prefix + service) for prefix in self._own_prefixes()]
            if await self._txn(ops) is not None:
                forgotten.add(service)
        return forgotten

    def _own_prefixes(self) -> tuple[str, ...]:
        """Where Genisys keeps a service's keys (the total is Skynet's)."""
        return (self.placements_prefix, self.status_prefix, self.events_prefix,
                self.lifecycle_prefix)

    async def known_services(self) -> set[str]:
        """Services with a placement, lifecycle flags, a status or a history (the last two
        read as key names only: no values)."""
        known = {name for view, prefix in ((self.placements_view, self.placements_prefix),
                                           (self.lifecycle_view, self.lifecycle_prefix))
                 for name in _valid_names(view.entries, prefix)}
        for prefix in (self.status_prefix, self.events_prefix):
            _, keys = await self.consul.kv.get(prefix, keys=True, separator="/")
            known.update(_valid_names(keys or (), prefix))
        return known

    # -- order history ------------------------------------------------------------------

    async def events(self, service: str | None = None) -> dict[str, list[dict]]:
        """The order history of `service` (None: of every service), newest first."""
        if service is None:
            _, items = await self.consul.kv.get(self.events_prefix, recurse=True)
        else:
            _, item = await self.consul.kv.get(self.events_prefix + service)
            items = [item] if item else []
        return {item["Key"][len(self.events_prefix):]: events for item in items or ()
                if isinstance(events := _from_json(item.get("Value")), list)}


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
        compute_indexes = {c.name: index for c, index in self._view_computes()[0]}
        for service, (placement, total_index, placement_index) in placements.items():
            group = [_kv("check-index", self.resources_key_prefix + service, index=total_index),
                     _kv("cas", self.placements_prefix + service, _to_json(placement),
                         placement_index)]
            # As a scale request does: a compute deleted or marked meanwhile refuses it.
            group += [_kv("check-index", self.computes_prefix + c, index=compute_indexes.get(c, 0))
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
        # and a status's history, stay with it.
        batch: list[dict] = []
        size = 0
        for group in groups + [None]:
            group_size = group and sum(len(op["KV"].get("Value", "")) for op in group)
            if group is None or len(batch) + len(group) > TXN_OPS - 1 \
                    or size + group_size > TXN_BYTES:
                if batch:
                    ok = await self._txn([guard, *batch]) is not None and ok
                batch, size = [], 0
            if group is not None:
                batch.extend(group)
                size += group_size
        return ok
