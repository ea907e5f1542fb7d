"""This replica's copy of the compute registry and of every service's desired state: two
tables changed in place, one entry at a time (no copy of a table per change)."""

from bisect import bisect_left
from dataclasses import dataclass, field

from genisys.model import Compute, ValidationError, url_identity
from genisys.placement import ComputeSpec
from genisys.store.values import Entry, _from_json, _warn_once


@dataclass(frozen=True, slots=True)
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

    @property
    def exists(self) -> bool:
        return bool(self.total_index or self.placement_index or self.flags_index)


ABSENT = DesiredRecord(None, 0, {}, 0)


def later(mine: DesiredRecord, read: DesiredRecord) -> DesiredRecord:
    """Each key's newer value of two records of one service (ModifyIndexes only grow;
    0, absent, is older than any): a key written here after a read began wins."""
    fields = {}
    for part, index in (("total", "total_index"), ("placement", "placement_index"),
                        ("flags", "flags_index")):
        newer = mine if getattr(mine, index) > getattr(read, index) else read
        fields[part], fields[index] = getattr(newer, part), getattr(newer, index)
    return DesiredRecord(**fields)


class ServiceTable:
    """Every service's DesiredRecord, by name."""

    def __init__(self):
        self.records: dict[str, DesiredRecord] = {}

    def get(self, name: str) -> DesiredRecord:
        return self.records.get(name, ABSENT)

    def put(self, name: str, record: DesiredRecord) -> bool:
        """Install `record` (ABSENT-like removes the service); True when that changed it."""
        if self.records.get(name, ABSENT) == record:
            return False
        if record.exists:
            self.records[name] = record
        else:
            self.records.pop(name, None)
        return True


@dataclass(frozen=True, slots=True)
class StoredCompute:
    compute: Compute
    modify_index: int
    create_index: int

    @classmethod
    def decode(cls, name: str, entry: Entry | None) -> "StoredCompute | None":
        """The compute in `entry`; None when absent, or when its value is not a definition
        of compute `name` (skipped with a warning)."""
        if entry is None:
            return None
        try:
            compute = Compute.from_stored(_from_json(entry.value))
        except ValidationError as exc:
            _warn_once(f"ignoring {entry.key}: its value is not a compute definition ({exc})")
            return None
        if compute.name != name:
            _warn_once(f"ignoring {entry.key}: its value names compute {compute.name!r}")
            return None
        return cls(compute, entry.modify_index, entry.create_index)


class ComputeTable:
    """Every compute, by name, and what is derived from them, kept in definition order
    (CreateIndex, then name) as each compute comes, changes or goes: no sort per change.
    What a reader took never changes under it: a change copies the derived lists and
    dicts first if a reader took them since the last change (copy on write), so a burst
    of creates between two reads copies them once."""

    def __init__(self):
        self.entries: dict[str, StoredCompute] = {}
        self._owners: dict[str, set[str]] = {}  # connector identity -> compute names
        self._keys: list[tuple[int, str]] = []  # (CreateIndex, name), in definition order
        self._ordered: list[tuple[Compute, int]] = []
        self._connectors: dict[str, str] = {}
        self._specs: dict[str, ComputeSpec] = {}
        self._taken = False  # a reader holds the derived lists and dicts

    def get(self, name: str) -> StoredCompute | None:
        return self.entries.get(name)

    def put(self, name: str, stored: StoredCompute | None) -> bool:
        """Install `stored` (None removes the compute); True when that changed it."""
        old = self.entries.get(name)
        if old == stored:
            return False
        if self._taken:
            self._ordered, self._connectors = list(self._ordered), dict(self._connectors)
            self._specs, self._taken = dict(self._specs), False
        if old is not None:
            owners = self._owners[url_identity(old.compute.connector)]
            owners.discard(name)
            if not owners:
                del self._owners[url_identity(old.compute.connector)]
            self._remove(old)
        if stored is None:
            del self.entries[name]
        else:
            self.entries[name] = stored
            self._owners.setdefault(url_identity(stored.compute.connector), set()).add(name)
            self._insert(stored)
        return True

    def owners(self, connector: str) -> set[str]:
        """The computes whose connector is `connector` (by url_identity)."""
        return self._owners.get(url_identity(connector), set())

    def ordered(self) -> list[tuple[Compute, int]]:
        """Every compute with its ModifyIndex, in definition order (CreateIndex)."""
        self._taken = True
        return self._ordered

    def connectors(self) -> dict[str, str]:
        """Compute name -> connector URL, in definition order."""
        self._taken = True
        return self._connectors

    def specs(self) -> dict[str, ComputeSpec]:
        self._taken = True
        return self._specs

    def _remove(self, old: StoredCompute) -> None:
        at = bisect_left(self._keys, (old.create_index, old.compute.name))
        del self._keys[at], self._ordered[at]
        del self._connectors[old.compute.name], self._specs[old.compute.name]

    def _insert(self, stored: StoredCompute) -> None:
        compute = stored.compute
        at = bisect_left(self._keys, (stored.create_index, compute.name))
        self._keys.insert(at, (stored.create_index, compute.name))
        self._ordered.insert(at, (compute, stored.modify_index))
        # A dict keeps insertion order: those defined after this one move behind it (a
        # few: concurrent creates commit in nearly their CreateIndex order).
        for moved, _ in self._ordered[at:]:
            self._connectors[moved.name] = self._connectors.pop(moved.name, moved.connector)
            self._specs[moved.name] = self._specs.pop(moved.name, None) or moved.spec
