"""The change journal: one key per service, `{key_prefix}changes/services/<svc>`, and per
compute, `{key_prefix}changes/computes/<name>`, set in the transaction of every Genisys
write of that service's desired state or that compute (a `set`: writers never contend on
it). The leader's placement transactions name their services in one entry each instead,
`{key_prefix}changes/batch/<random>` (a JSON list): 100,000 placements leave under
10,000 entries, not 100,000, for every answer of the watch to carry until they are trimmed.
Every replica watches this small prefix instead of the large ones, and re-reads only what
an entry newer than the one it processed names.

The leader deletes an entry once it has seen it for `grace` seconds (delete-cas at the
index it saw: an entry rewritten meanwhile stays). A replica whose watch had no answer for
`grace / 2` may have missed an entry written and deleted meanwhile: it resynchronises
everything instead, as when Consul's index goes backwards (a restored snapshot).
"""

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Callable

from genisys.model import NAME_PATTERN
from genisys.store.sync import SyncState, answers
from genisys.store.transport import SlicedItems, _Consul, read_prefix_text, transact
from genisys.store.values import TXN_OPS, Entry, _kv

log = logging.getLogger(__name__)

SERVICES = "services/"
COMPUTES = "computes/"
BATCH = "batch/"
# Long enough for a quiet journal to cost almost nothing, short enough that a Consul that
# hangs is noticed within seconds.
MAX_WAIT = 10.0
# After each answer, a pause nine times as long as processing it took: the watch stays
# under ~10% of a CPU even when a burst of writes swells the journal (a few ms otherwise).
SHARE = 0.10


class Journal:
    def __init__(self, consul: _Consul, prefix: str, grace: float,
                 on_changed: Callable[[dict[str, int]], None], on_gap: Callable[[str], None]):
        self._consul = consul
        self.prefix = prefix
        self.grace = grace
        # An answer comes at least every `wait` (+1/16): well inside grace / 2.
        self.wait = min(MAX_WAIT, grace / 4)
        self.on_changed = on_changed  # entries newer than processed: key -> ModifyIndex
        self.on_gap = on_gap  # why everything must be read again
        self.state = SyncState(f"the change journal {prefix}")
        self.index = 0
        self.processed: dict[str, int] = {}  # entry key -> the ModifyIndex handled
        # Entries this replica is writing now, and what the watch saw of them meanwhile: a
        # busy replica often hears of its own write from the watch before the answer of
        # the transaction itself; re-reading it would be wasted (100,000 at once).
        self._writing: Counter[str] = Counter()
        self._seen_while_writing: dict[str, int] = {}
        self.trimming = False  # set while this replica leads
        self._first_seen: dict[str, tuple[int, float]] = {}  # key -> (index, monotonic)
        self._tasks: list[asyncio.Task] = []
        self._batches: dict[str, list[str]] = {}  # batch entry -> its services, last answer

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch()), loop.create_task(self._trim())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def writing(self, ops: list[dict]) -> list[str]:
        """A transaction of this replica with these operations is sent: its entries."""
        entries = [op["KV"]["Key"] for op in ops if op["KV"]["Key"].startswith(self.prefix)
                   and op["KV"]["Verb"] == "set"]
        self._writing.update(entries)
        return entries

    def written(self, entries: list[str], written: dict[str, Entry]) -> None:
        """The transaction of `entries` ended (`written`: what it wrote, empty when it
        failed): an entry the watch saw meanwhile at another index than this write's was
        someone else's, and is handled now."""
        self._writing.subtract(entries)
        others = {}
        for key in entries:
            if self._writing[key] <= 0:
                del self._writing[key]
                seen = self._seen_while_writing.pop(key, None)
                entry = written.get(key)
                if seen is not None and (entry is None or entry.modify_index != seen):
                    others[key] = seen
        if others:
            self.on_changed(self._expand(others))

    def mark(self, key: str, index: int) -> None:
        """This replica wrote entry `key` at `index` (and applied the write): nothing to
        re-read for it."""
        self.processed[key] = max(index, self.processed.get(key, 0))

    async def _watch(self) -> None:
        answered_at = None
        async for index, body in answers(lambda: read_prefix_text(
                self._consul, self.prefix, self.index, self.wait), self.state, self.prefix):
            answered = time.monotonic()
            gap = None if answered_at is None else answered - answered_at
            answered_at = answered
            self.state.ok()
            items = SlicedItems(body)
            entries, batches = {}, {}
            async for item in items:
                entries[item["Key"]] = item["ModifyIndex"]
                if item["Key"].startswith(self.prefix + BATCH):
                    batches[item["Key"]] = batch_names(item.get("Value"))
            self._batches = batches
            del body
            started = time.monotonic()
            self._answered(index, entries, gap)
            took = items.busy + time.monotonic() - started
            await asyncio.sleep(min(took * (1 - SHARE) / SHARE, self.grace / 8))

    def _answered(self, index: int, entries: dict[str, int], gap: float | None) -> None:
        reason = None
        if gap is not None and gap > self.grace / 2:
            reason = (f"no answer from its watch on {self.prefix} for {gap:.1f}s (more than "
                      f"half the journal's grace of {self.grace:g}s)")
        elif index < self.index:
            reason = f"Consul's index went backwards ({self.index} to {index})"
        changed = {}
        for key, at in entries.items():
            if at > self.processed.get(key, 0):
                if key in self._writing:  # decided once that write's answer is in
                    self._seen_while_writing[key] = max(at, self._seen_while_writing.get(key, 0))
                else:
                    changed[key] = at
        # An entry absent from the answer is forgotten, unless this replica wrote it after
        # the answer was made.
        self.processed = {key: at for key, at in self.processed.items() if at > index}
        for key, at in entries.items():
            self.mark(key, at)
        self.index = index
        if self.trimming:
            now = time.monotonic()
            self._first_seen = {key: seen if (seen := self._first_seen.get(key)) and seen[0] == at
                                else (at, now) for key, at in entries.items()}
        if reason:
            self.on_gap(reason)
        elif changed:
            self.on_changed(self._expand(changed))

    def _expand(self, entries: dict[str, int]) -> dict[str, int]:
        """Entries (key -> ModifyIndex), a batch entry replaced by a service entry key per
        service it names."""
        expanded = {}
        for key, at in entries.items():
            if key.startswith(self.prefix + BATCH):
                named = [self.prefix + SERVICES + name for name in self._batches.get(key, ())]
            else:
                named = [key]
            for entry in named:
                expanded[entry] = max(at, expanded.get(entry, 0))
        return expanded

    async def _trim(self) -> None:
        """While leading: delete the entries seen for longer than the grace period."""
        while True:
            await asyncio.sleep(self.grace / 4)
            if not self.trimming:
                self._first_seen = {}
                continue
            now = time.monotonic()
            old = [(key, at) for key, (at, seen) in self._first_seen.items()
                   if now - seen >= self.grace]
            try:
                for start in range(0, len(old), TXN_OPS):
                    await self._delete(old[start:start + TXN_OPS])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again
                log.warning("could not trim the change journal %s: %s", self.prefix, exc)

    async def _delete(self, entries: list[tuple[str, int]]) -> None:
        ops = [_kv("delete-cas", key, index=at) for key, at in entries]
        if await transact(self._consul, ops) is None and len(entries) > 1:
            for key, at in entries:  # one was rewritten meanwhile: it stays, the rest go
                await transact(self._consul, [_kv("delete-cas", key, index=at)])


def batch_names(value: str | None) -> list[str]:
    """The services a batch entry names (Consul's base64 value); [] when it names none."""
    try:
        names = json.loads(base64.b64decode(value or ""))
    except ValueError:
        return []
    if not isinstance(names, list):
        return []
    return [name for name in names if isinstance(name, str) and NAME_PATTERN.fullmatch(name)]
