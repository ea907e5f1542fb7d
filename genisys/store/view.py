"""PrefixView: a local copy of a small Consul prefix (the API tokens), kept current by
blocking queries (an "informer", in Kubernetes terms). Each change re-reads the whole
prefix: for the large ones, see genisys/store/mirror.py."""

import asyncio
import logging

from genisys.store.sync import SyncState, answers
from genisys.store.transport import ConsulError, ConsulUnavailable, _Consul
from genisys.store.values import Entry, _entry

log = logging.getLogger(__name__)

# Long enough for a quiet prefix to cost almost nothing, short enough that a Consul that
# hangs (rather than refusing connections) is noticed within seconds.
WATCH_WAIT_SECONDS = 10


class PrefixView:
    """A local copy of every key under a prefix, kept current by blocking queries.

    `entries` is only trustworthy while `state.synced`; after a failed query it is not,
    until the next successful one. A replica's own writes show at once (`write_through`),
    without re-reading the prefix.
    """

    def __init__(self, client: _Consul, prefix: str):
        self._client = client
        self.prefix = prefix
        self.entries: dict[str, Entry] = {}
        self.index = 0
        self.state = SyncState(f"the keys under {prefix}")
        self._task: asyncio.Task | None = None
        self._own: dict[str, Entry] = {}  # own writes the watch has not brought back yet

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def write_through(self, written: list[Entry]) -> None:
        """Show this replica's own writes now; Consul's answer as of their index, or a
        later one, replaces them (so an older answer still in flight cannot undo them)."""
        self._own.update((entry.key, entry) for entry in written)
        self.entries.update((entry.key, entry) for entry in written)

    async def refresh(self) -> None:
        """Read the prefix now (not blocking) and install it: read-your-writes."""
        try:
            index, items = await self._client.kv.get(self.prefix, recurse=True)
        except (ConsulUnavailable, ConsulError) as exc:
            self.state.lost(exc)
            raise
        self._install(int(index), items, force=False)

    async def _watch(self) -> None:
        async for index, items in answers(lambda: self._client.kv.get(
                self.prefix, recurse=True, index=self.index or None,
                wait=f"{WATCH_WAIT_SECONDS}s"), self.state, self.prefix):
            index = int(index)
            # Consul's indexes can go backwards (e.g. a restored snapshot); start over then.
            self._install(index, items, force=index < self.index)

    def _install(self, index: int, items, force: bool) -> None:
        if index < self.index and not force:
            return  # an older answer than the one we hold
        entries = {item["Key"]: _entry(item) for item in items or ()}
        self._own = {} if force else {k: e for k, e in self._own.items() if e.modify_index > index}
        entries.update(self._own)
        self.state.ok()
        self.entries, self.index = entries, index
