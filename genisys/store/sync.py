"""Whether a watched part of Consul is in sync here, and why not (for /health and
metrics)."""

import time


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
