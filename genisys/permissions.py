"""What Consul's ACLs let this replica do: probed at start-up and every few seconds after.

The probe (ConsulStore.denied_permissions) changes nothing. Each denied permission is
logged in one line when it is first seen, and again when it is granted; /health reports
the current ones.
"""

import asyncio
import logging

from genisys.store import ConsulStore

log = logging.getLogger(__name__)

# Often enough for /health to notice a changed policy within seconds; the probe costs
# Consul a handful of cheap requests.
PROBE_INTERVAL = 5.0


class PermissionWatch:
    def __init__(self, store: ConsulStore, interval: float = PROBE_INTERVAL):
        self._store = store
        self.interval = interval
        self.denied: list[str] = []  # as of the last probe Consul answered
        self.probed = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="acl-probe")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                self._record(await self._store.denied_permissions())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Consul down: /health says so through its ping
                log.debug("cannot probe Consul's permissions: %s", exc)
            await asyncio.sleep(self.interval)

    def _record(self, denied: list[str]) -> None:
        if not self.probed and not denied:
            log.info("Consul's ACLs allow everything Genisys needs")
        for sentence in denied:
            if sentence not in self.denied:
                log.error("%s", sentence)
        for sentence in self.denied:
            if sentence not in denied:
                log.info("no longer denied: %s", sentence)
        self.denied, self.probed = denied, True
