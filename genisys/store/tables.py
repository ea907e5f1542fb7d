"""This replica's copy of the compute registry and of every service's desired state: two
tables changed in place, one entry at a time, each with a version number that readers
cache what they derive by (no copy of a table per change)."""

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
        self.version = 0

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
        self.version += 1
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
    """Every compute, by name; its definition order and connector owners derived on
    demand: a new compute is appended to them, any other change has them derived again."""

    def __init__(self):
        self.entries: dict[str, StoredCompute] = {}
        self.version = 0
        self._owners: dict[str, set[str]] = {}  # connector identity -> compute names
        self._stale = False  # the derived order, connectors and specs must be redone
        self._ordered: list[tuple[Compute, int]] = []
        self._connectors: dict[str, str] = {}
        self._specs: dict[str, ComputeSpec] = {}
        self._last_created = (0, "")  # (CreateIndex, name) of the last in that order

    def get(self, name: str) -> StoredCompute | None:
        return self.entries.get(name)

    def put(self, name: str, stored: StoredCompute | None) -> bool:
        """Install `stored` (None removes the compute); True when that changed it."""
        old = self.entries.get(name)
        if old == stored:
            return False
        if old is not None:
            owners = self._owners[url_identity(old.compute.connector)]
            owners.discard(name)
            if not owners:
                del self._owners[url_identity(old.compute.connector)]
        if stored is None:
            del self.entries[name]
        else:
            self.entries[name] = stored
            self._owners.setdefault(url_identity(stored.compute.connector), set()).add(name)
        if old is None and stored is not None and not self._stale \
                and self._last_created <= (stored.create_index, name):
            self._append(stored)  # a new compute comes last: no sort of 10,000 again
        else:
            self._stale = True
        self.version += 1
        return True

    def owners(self, connector: str) -> set[str]:
        """The computes whose connector is `connector` (by url_identity)."""
        return self._owners.get(url_identity(connector), set())

    def ordered(self) -> list[tuple[Compute, int]]:
        """Every compute with its ModifyIndex, in definition order (CreateIndex)."""
        self._derive()
        return self._ordered

    def connectors(self) -> dict[str, str]:
        """Compute name -> connector URL, in definition order."""
        self._derive()
        return self._connectors

    def specs(self) -> dict[str, ComputeSpec]:
        self._derive()
        return self._specs

    def _derive(self) -> None:
        if not self._stale:
            return
        stored = sorted(self.entries.values(),
                        key=lambda entry: (entry.create_index, entry.compute.name))
        self._ordered = [(s.compute, s.modify_index) for s in stored]
        self._connectors = {c.name: c.connector for c, _ in self._ordered}
        self._specs = {c.name: c.spec for c, _ in self._ordered}
        self._last_created = (stored[-1].create_index, stored[-1].compute.name) if stored \
            else (0, "")
        self._stale = False

    def _append(self, stored: StoredCompute) -> None:
        """`stored`, a new compute, goes last in the derived order. New lists and dicts
        (copies cost far less than a sort): what a reader took keeps what it had."""
        compute = stored.compute
        self._ordered = [*self._ordered, (compute, stored.modify_index)]
        self._connectors = {**self._connectors, compute.name: compute.connector}
        self._specs = {**self._specs, compute.name: compute.spec}
        self._last_created = (stored.create_index, compute.name)
