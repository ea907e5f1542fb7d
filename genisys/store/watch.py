"""BoundedWatch: a blocking query on a prefix that other tools write (Skynet's totals),
whose cost is bounded rather than proportional to how often the prefix changes.

Consul 1.8 answers a blocking query on a prefix with the whole prefix: with 100,000 totals,
every answer is ~18 MB to parse. After each answer the watch pauses nine times as long
as the answer took to parse and process (at least `min_pause`), so that it uses at most
~10% of a CPU however often the prefix changes; a change another tool makes is seen within
about max(min_pause, 10 x that time). Genisys's own writes do not wait for it: they go
through the change journal.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from genisys.store.sync import SyncState, answers
from genisys.store.transport import SlicedItems, _Consul, read_prefix_text

log = logging.getLogger(__name__)

# Each answer holds the whole prefix, even one that says nothing changed: wait long.
WAIT = 60.0
SHARE = 0.10  # of a CPU, at most


class BoundedWatch:
    def __init__(self, consul: _Consul, prefix: str,
                 on_answer: Callable[[int, dict[str, int]], None], min_pause: float = 1.0):
        self._consul = consul
        self.prefix = prefix
        self.on_answer = on_answer  # (Consul's index, key -> ModifyIndex) when it changed
        self.min_pause = min_pause
        self.state = SyncState(f"the keys under {prefix}")
        self.index = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        async for index, body in answers(lambda: read_prefix_text(
                self._consul, self.prefix, self.index, WAIT), self.state, self.prefix):
            self.state.ok()
            if index == self.index:
                continue  # the wait ran out: nothing changed
            # Only the key names and ModifyIndexes: values are never decoded here.
            items = SlicedItems(body)
            indexes = {item["Key"]: item["ModifyIndex"] async for item in items}
            del body
            started = time.monotonic()
            self.index = index
            self.on_answer(index, indexes)
            took = items.busy + time.monotonic() - started
            await asyncio.sleep(max(self.min_pause, took * (1 - SHARE) / SHARE))
