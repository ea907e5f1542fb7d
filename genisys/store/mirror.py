"""Mirror: this replica's copy of the compute registry and of every service's desired state
(total, placement, lifecycle flags), kept current at the cost of what changed.

- Its own writes: every transaction this replica commits is applied at once (`apply`),
  key by key: read-your-writes, without reading anything.
- Other replicas' writes: each names its service or compute in the change journal
  (genisys/store/journal.py); an entry newer than the one processed makes the mirror
  re-read that service's total, placement and flags in ONE transaction, and install them
  together: no reader ever sees a new total beside an old placement.
- Other tools' totals (skynet/resources/<svc>, no journal entry): a BoundedWatch of the
  resources prefix compares ModifyIndexes, without decoding values, and re-reads the
  services whose total changed, in the same per-service transaction.
- A resync reads everything again when the journal cannot be trusted (no answer for half
  its grace period, Consul's index going backwards), on start, or when more changed at
  once than re-reading one by one is worth.

Reads are serialised per key: one round of re-reads at a time, and a service this replica
writes while its re-read is in flight is re-read again rather than installed from a read
that may predate the write.
"""

import asyncio
import base64
import logging
from collections.abc import Callable
from itertools import chain

from genisys.bounded import each, slices
from genisys.model import NAME_PATTERN
from genisys.store.journal import BATCH, COMPUTES, SERVICES, Journal, batch_names
from genisys.store.sync import SyncState
from genisys.store.tables import (
    ABSENT,
    ComputeTable,
    DesiredRecord,
    ServiceTable,
    StoredCompute,
    later,
)
from genisys.store.transport import _Consul, read_keys, read_prefix
from genisys.store.values import (
    TXN_OPS,
    Entry,
    _from_json,
    _parse_placement,
    _parse_total,
    _valid_names,
    _warn_once,
)
from genisys.store.watch import BoundedWatch

log = logging.getLogger(__name__)

# Re-reading a service costs about 1.6 times its share of a resync (100,000 services:
# 5.3 s for a resync, 0.6 s for 10,000 one by one). So more changes at once than this,
# and than half the services known (a bulk write of totals), are read with one resync.
RESYNC_ABOVE = 2000
READERS = 4  # transactions of re-reads in flight at once
INSTALL_SLICE = 1000  # services installed (and announced) before the event loop's turn
DECODE_SLICE = 50  # transactions' answers decoded before it (about 1,000 services)


class Mirror:
    def __init__(self, consul: _Consul, *, key_prefix: str, resources_prefix: str,
                 grace: float, watch_pause: float,
                 on_services: Callable[[set[str]], None],
                 on_computes: Callable[[set[str]], None]):
        self._consul = consul
        self.computes_prefix = f"{key_prefix}computes/"
        self.placements_prefix = f"{key_prefix}placements/"
        self.lifecycle_prefix = f"{key_prefix}lifecycle/"
        self.resources_prefix = resources_prefix
        self.journal_prefix = f"{key_prefix}changes/"
        self.services = ServiceTable()
        self.computes = ComputeTable()
        self.on_services = on_services
        self.on_computes = on_computes
        self.journal = Journal(consul, self.journal_prefix, grace, self._journaled, self.resync)
        self.resources = BoundedWatch(consul, resources_prefix, self._totals_seen,
                                      min_pause=watch_pause)
        self.registry = BoundedWatch(consul, self.computes_prefix, self._computes_seen,
                                     min_pause=watch_pause)
        self.state = SyncState("the compute registry and the desired state")
        self._pending_services: set[str] = set()
        self._pending_computes: set[str] = set()
        self._resync_reason: str | None = "starting"
        # While reads are in flight: what this replica wrote meanwhile (kind, name).
        self._written_meanwhile: set[tuple[str, str]] | None = None
        # The watches' last answers while a resync is due: compared once it is done.
        self._deferred: dict[Callable, tuple[int, dict[str, int]]] = {}
        self._resyncing = False
        # While a resync runs: what journal entries named meanwhile, (kind, name) -> the
        # entry's ModifyIndex; the resync's own read covers those it reads the journal after.
        self._named_while_resyncing: dict[tuple[str, str], int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def parts(self) -> tuple[SyncState, ...]:
        return (self.state, self.journal.state, self.resources.state, self.registry.state)

    @property
    def synced(self) -> bool:
        return all(part.synced for part in self.parts)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.journal.start()
        self.resources.start()
        self.registry.start()

    async def stop(self) -> None:
        await self.journal.stop()
        await self.resources.stop()
        await self.registry.stop()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def journal_key(self, kind: str, name: str) -> str:
        return f"{self.journal_prefix}{kind}{name}"

    def service_keys(self, service: str) -> list[str]:
        """The keys of a service's desired state, read together."""
        return [self.resources_prefix + service, self.placements_prefix + service,
                self.lifecycle_prefix + service]

    def resync(self, reason: str) -> None:
        """Read everything again (soon, on the mirror's task)."""
        if self._resync_reason is None:
            self._resync_reason = reason
        self._wake.set()

    # -- this replica's writes ------------------------------------------------------------

    def apply(self, written: dict[str, Entry], deleted: set[str]) -> None:
        """Install what a transaction of this replica wrote and deleted, key by key."""
        services: dict[str, dict[str, Entry | None]] = {}
        computes: dict[str, Entry | None] = {}
        for key, entry in chain(written.items(), ((key, None) for key in deleted)):
            if key.startswith(self.journal_prefix):
                if entry is not None:
                    self.journal.mark(key, entry.modify_index)
                continue
            part, name = self._classify(key)
            if part == "compute":
                computes[name] = entry
            elif part is not None:
                services.setdefault(name, {})[part] = entry
        changed = {name for name, parts in services.items()
                   if self.services.put(name, self.record(parts, self.services.get(name)))}
        computes_changed = {name for name, entry in computes.items()
                            if self.computes.put(name, StoredCompute.decode(name, entry))}
        if self._written_meanwhile is not None:
            # A deletion leaves no index to compare a read with: such a service is read
            # again; one only written is merged key by key (_install).
            self._written_meanwhile |= {
                ("deleted" if None in parts.values() else "service", name)
                for name, parts in services.items()}
            self._written_meanwhile |= {("compute", name) for name in computes}
        self._notify(changed, computes_changed)

    def _classify(self, key: str) -> tuple[str | None, str]:
        for part, prefix in (("total", self.resources_prefix), ("compute", self.computes_prefix),
                             ("placement", self.placements_prefix),
                             ("flags", self.lifecycle_prefix)):
            if key.startswith(prefix):
                name = key[len(prefix):]
                return (part, name) if NAME_PATTERN.fullmatch(name) else (None, name)
        return None, key

    @staticmethod
    def record(parts: dict[str, Entry | None], base: DesiredRecord = ABSENT) -> DesiredRecord:
        """`base` with the parts read or written replaced: "total", "placement", "flags"
        (an absent key: None)."""
        fields = {}
        if "total" in parts:
            entry = parts["total"]
            total = _parse_total(entry.value) if entry else None
            if entry and total is None:
                _warn_once(f"ignoring {entry.key}: its value {entry.value[:40]!r} is not a count")
            fields.update(total=total, total_index=entry.modify_index if entry else 0)
        if "placement" in parts:
            entry = parts["placement"]
            fields.update(placement=_parse_placement(entry.value) if entry else {},
                          placement_index=entry.modify_index if entry else 0)
        if "flags" in parts:
            entry = parts["flags"]
            flags = _from_json(entry.value) if entry else None
            fields.update(flags=flags if isinstance(flags, dict) else {},
                          flags_index=entry.modify_index if entry else 0)
        return DesiredRecord(**{name: fields.get(name, getattr(base, name))
                                for name in DesiredRecord.__slots__})

    def _notify(self, services: set[str], computes: set[str]) -> None:
        if services:
            self.on_services(services)
        if computes:
            self.on_computes(computes)

    # -- what others wrote ------------------------------------------------------------------

    def _journaled(self, entries: dict[str, int]) -> None:
        """Journal entries newer than processed (key -> ModifyIndex): re-read what they
        name; during a resync, only what it does not read after them (`_resync`)."""
        for key, at in entries.items():
            kind, _, name = key[len(self.journal_prefix):].partition("/")
            kind = {SERVICES: "service", COMPUTES: "compute"}.get(f"{kind}/")
            if kind is None:
                continue
            if self._resyncing:
                named = self._named_while_resyncing
                named[kind, name] = max(at, named.get((kind, name), 0))
            else:
                (self._pending_services if kind == "service" else self._pending_computes).add(name)
        self._wake.set()

    def reread(self, services: set[str]) -> None:
        """Read these services again from Consul (a check-and-set lost to a writer that
        set no journal entry); subscribers hear of those that changed."""
        self._pending_services |= services
        self._wake.set()

    def _totals_seen(self, index: int, indexes: dict[str, int]) -> None:
        """An answer of the resources watch: re-read the services whose total is newer
        than ours, appeared, or disappeared."""
        if self._resync_reason or self._resyncing:
            self._deferred[self._totals_seen] = (index, indexes)
            return
        changed = _newer(indexes, self.resources_prefix, index, {
            name: record.total_index for name, record in self.services.records.items()
            if record.total_index})
        if self._worth_a_resync(len(changed)):
            self.resync(f"{len(changed)} totals under {self.resources_prefix} changed at once")
        elif changed:
            self._pending_services |= changed
            self._wake.set()

    def _computes_seen(self, index: int, indexes: dict[str, int]) -> None:
        """An answer of the registry watch (a compute written by another tool, or by
        Consul's own CLI): re-read the computes newer than ours."""
        if self._resync_reason or self._resyncing:
            self._deferred[self._computes_seen] = (index, indexes)
            return
        changed = _newer(indexes, self.computes_prefix, index, {
            name: stored.modify_index for name, stored in self.computes.entries.items()})
        if changed:
            self._pending_computes |= changed
            self._wake.set()

    # -- reading ------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            if not (self._resync_reason or self._pending_services or self._pending_computes):
                await self._wake.wait()
            self._wake.clear()
            try:
                if self._resync_reason:
                    await self._resync()
                else:
                    await self._read_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never dies: retries with back-off
                if self.state.synced or failures == 0 or str(exc) != str(self.state.error):
                    log.warning("could not read the desired state from Consul: %s", exc)
                self.state.lost(exc)
                failures += 1
                await asyncio.sleep(min(0.1 * 2 ** failures, 2.0))
                continue
            failures = 0
            if not self._resync_reason:
                self.state.ok()

    async def _read_pending(self) -> None:
        services, self._pending_services = self._pending_services, set()
        computes, self._pending_computes = self._pending_computes, set()
        if self._worth_a_resync(len(services) + len(computes)):
            self.resync(f"{len(services) + len(computes)} changes at once")
            return
        self._written_meanwhile = set()
        try:
            records, stored = await self._read(services, computes)
            await self._install(records, stored)
        except BaseException:
            self._pending_services |= services
            self._pending_computes |= computes
            raise
        finally:
            self._written_meanwhile = None

    def _worth_a_resync(self, changes: int) -> bool:
        return changes > max(RESYNC_ABOVE, len(self.services.records) // 2)

    async def _read(self, services: set[str], computes: set[str]
                    ) -> tuple[dict[str, DesiredRecord], dict[str, StoredCompute | None]]:
        """Read the services' desired states (each in one transaction with its three
        keys) and the computes, fresh from Consul."""
        units = [("service", name, self.service_keys(name)) for name in services]
        units += [("compute", name, [self.computes_prefix + name]) for name in computes]
        batches, batch = [], []
        for unit in units:
            if sum(len(keys) for _, _, keys in batch) + len(unit[2]) > TXN_OPS:
                batches.append(batch)
                batch = []
            batch.append(unit)
        if batch:
            batches.append(batch)

        async def read(batch):
            keys = [key for _, _, unit_keys in batch for key in unit_keys]
            return batch, await read_keys(self._consul, keys, self._likely_present(batch))

        records, stored = {}, {}
        async for answers in slices(await each(batches, READERS, read), DECODE_SLICE):
            for batch, found in answers:
                for kind, name, keys in batch:
                    if kind == "compute":
                        stored[name] = StoredCompute.decode(name, found.get(keys[0]))
                    else:
                        records[name] = self.record(dict(zip(
                            ("total", "placement", "flags"), (found.get(key) for key in keys))))
        return records, stored

    def _likely_present(self, batch) -> set[str]:
        """The keys a read should `get` (read_keys): those this replica has, and the total
        and placement of a service it does not know yet."""
        present = set()
        for kind, name, keys in batch:
            if kind == "compute":
                present.add(keys[0])
                continue
            record = self.services.records.get(name)
            for key, index in zip(keys, (record.total_index, record.placement_index,
                                         record.flags_index) if record else (1, 1, 0)):
                if index:
                    present.add(key)
        return present

    async def _install(self, records: dict[str, DesiredRecord],
                       stored: dict[str, StoredCompute | None]) -> None:
        """Install what was read. What this replica wrote while reading or installing
        may be newer than the read: a service's keys are merged one by one, the later
        ModifyIndex winning (a leader placing 100,000 services during a resync would
        otherwise read them all again); a service or compute it deleted is read again.
        Services go in INSTALL_SLICE at a time, each whole, the event loop free in
        between."""
        meanwhile = self._written_meanwhile
        computes_changed = set()
        for name, entry in stored.items():
            if ("compute", name) in meanwhile:
                self._pending_computes.add(name)
            elif self.computes.put(name, entry):
                computes_changed.add(name)
        self._notify(set(), computes_changed)
        async for names in slices(records, INSTALL_SLICE):
            changed = set()
            for name in names:
                record = records[name]
                if ("deleted", name) in meanwhile:
                    self._pending_services.add(name)
                    continue
                if ("service", name) in meanwhile:
                    record = later(self.services.get(name), record)
                if self.services.put(name, record):
                    changed.add(name)
            self._notify(changed, set())
        if self._pending_services or self._pending_computes:
            self._wake.set()

    async def _resync(self) -> None:
        reason, self._resync_reason = self._resync_reason, None
        (log.info if reason == "starting" else log.warning)(
            "reading the whole compute registry and desired state from Consul: %s", reason)
        # What was pending is read with everything else. What the journal names while the
        # resync runs is read again only if written after the resync read the journal: a
        # leader placing thousands a second would otherwise set off resync after resync.
        self._pending_services, self._pending_computes = set(), set()
        self._written_meanwhile, self._resyncing = set(), True
        covered = 0  # the journal index the read covers
        try:
            records, stored, covered = await self._read_everything()
            records.update({name: ABSENT for name in self.services.records
                            if name not in records})
            stored.update({name: None for name in self.computes.entries if name not in stored})
            await self._install(records, stored)
        except BaseException:
            self._resync_reason = self._resync_reason or reason
            raise
        finally:
            self._written_meanwhile = None
            self._resyncing = False
            named, self._named_while_resyncing = self._named_while_resyncing, {}
            for (kind, name), at in named.items():
                if at > covered:
                    (self._pending_services if kind == "service"
                     else self._pending_computes).add(name)
        deferred, self._deferred = self._deferred, {}
        for compare, answer in deferred.items():
            compare(*answer)

    async def _read_everything(self) -> tuple[dict[str, DesiredRecord],
                                              dict[str, StoredCompute | None], int]:
        """Every compute and service, one prefix at a time (a transaction of get-tree
        operations would hold them all in memory at once); then, read again one by one,
        those the journal says were written after the first prefix was read: a total
        and a placement written together between two reads are never seen apart. With
        the index of the journal read: every entry up to it is covered."""
        first, items = await read_prefix(self._consul, self.computes_prefix)
        stored = {name: StoredCompute.decode(name, _entry(item)) async for item in items
                  if (name := item["Key"][len(self.computes_prefix):])}
        records: dict[str, DesiredRecord] = {}
        for part, prefix in (("total", self.resources_prefix),
                             ("placement", self.placements_prefix),
                             ("flags", self.lifecycle_prefix)):
            _, items = await read_prefix(self._consul, prefix)
            async for item in items:
                if _valid_names([item["Key"]], prefix):
                    name = item["Key"][len(prefix):]
                    records[name] = self.record({part: _entry(item)}, records.get(name, ABSENT))
        covered, journal = await read_prefix(self._consul, self.journal_prefix)
        services, computes = set(), set()
        async for item in journal:
            if item["ModifyIndex"] > first:
                kind, _, name = item["Key"][len(self.journal_prefix):].partition("/")
                if f"{kind}/" == SERVICES:
                    services.add(name)
                elif f"{kind}/" == COMPUTES:
                    computes.add(name)
                elif f"{kind}/" == BATCH:
                    services.update(batch_names(item.get("Value")))
        fresh_records, fresh_stored = await self._read(services, computes)
        records.update(fresh_records)
        stored.update(fresh_stored)
        return records, stored, covered


def _entry(item: dict) -> Entry:
    """An item of Consul's JSON, its value decoded."""
    return Entry(item["Key"], base64.b64decode(item.get("Value") or ""), item["CreateIndex"],
                 item["ModifyIndex"])


def _newer(indexes: dict[str, int], prefix: str, index: int, ours: dict[str, int]) -> set[str]:
    """The names whose key under `prefix` (key -> ModifyIndex, as of Consul's `index`) is
    newer than `ours` (name -> ModifyIndex), appeared, or disappeared; values unread."""
    changed, seen = set(), set()
    for key, at in indexes.items():
        name = key[len(prefix):]
        if name not in ours:
            if _valid_names([key], prefix):
                changed.add(name)
        elif at > ours[name]:
            changed.add(name)
        seen.add(name)
    return changed | {name for name, at in ours.items() if at <= index and name not in seen}
