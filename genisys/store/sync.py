"""Whether a watched part of Consul is in sync here, and why not (for /health and
metrics)."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)


class SyncState:
    """`synced` while the last read succeeded; `error` says why the last one failed."""

    def __init__(self, what: str):
        self.what = what  # named in the sentence /health gives while out of sync
        self.synced = False
        self.error: Exception | None = None
        self.out_of_sync_since: float | None = time.monotonic()  # None while synced

    def ok(self) -> None:
        self.synced, self.error, self.out_of_sync_since = True, None, None

    def lost(self, exc: Exception) -> None:
        if self.synced:
            self.out_of_sync_since = time.monotonic()
        self.synced, self.error = False, exc

    def trouble(self) -> str:
        return f"the local copy of {self.what} is not in sync with Consul."


async def answers(read: Callable[[], Awaitable], state: SyncState,
                  prefix: str) -> AsyncIterator:
    """Each answer of `read()` (a blocking query on `prefix`), for ever: a watch never dies.
    A failure marks `state` lost, is logged once (not on every retry) and is retried with
    back-off."""
    failures = 0
    while True:
        try:
            answer = await read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if state.synced or failures == 0 or str(exc) != str(state.error):
                log.warning("lost the watch on %s: %s", prefix, exc)
            state.lost(exc)
            failures += 1
            await asyncio.sleep(min(0.1 * 2 ** failures, 2.0))
            continue
        if failures:
            log.info("watching %s again", prefix)
        failures = 0
        yield answer
