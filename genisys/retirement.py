"""Retired connectors: the leader scales what still runs on them to 0, then forgets them.

A connector leaves the registry when its compute is deleted or moved to another URL
(genisys.store retires it in the same transaction). Genisys may have started instances
there, so the leader keeps looking at it on every full pass: it orders 0 for every
managed service that still runs there, and forgets the connector once it reports 0 for
all of them (DESIGN: never forget an instance). Services Genisys does not manage are
left alone: they are not Genisys's to stop.
"""

import asyncio
import logging

from genisys.bounded import each
from genisys.connector import ConnectorClient
from genisys.store import ConsulStore, RetiredConnector

log = logging.getLogger(__name__)


class Retirement:
    def __init__(self, store: ConsulStore, client: ConnectorClient, concurrency: int):
        self.store = store
        self.client = client
        self.concurrency = concurrency
        self._reported: dict[str, str] = {}  # connector -> the last problem logged

    async def drain(self, term, services: set[str]) -> None:
        """One pass over every retired connector; never raises (but for cancellation)."""
        try:
            retired = await self.store.retired_connectors()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("cannot read the retired connectors: %s", exc)
            return
        await asyncio.gather(*(self._drain_one(term, r, services) for r in retired))

    async def _drain_one(self, term, retired: RetiredConnector, services: set[str]) -> None:
        try:
            running = await self._running(retired.connector, services, retired.token)
            for service, count in running.items():
                if not term.valid():
                    return
                log.info("scaling %s on retired connector %s (was compute %s) from %d to 0 "
                         "(term %d)", service, retired.connector, retired.compute, count,
                         term.number, extra={"service": service, "compute": retired.compute,
                                             "term": term.number})
                await self.client.order(retired.connector, service, 0, term, retired.token)
            if running or not term.valid():
                return  # look again next pass: forget it only once it reports 0
            if await self.store.forget_retired(term.session, retired):
                log.info("retired connector %s (was compute %s) runs none of the managed "
                         "services any more: forgotten", retired.connector, retired.compute)
            self._reported.pop(retired.connector, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one connector's trouble stays its own
            problem = str(exc) or type(exc).__name__
            if self._reported.get(retired.connector) != problem:
                self._reported[retired.connector] = problem
                log.warning("cannot drain retired connector %s (was compute %s): %s; "
                            "retrying every full pass", retired.connector, retired.compute,
                            problem)

    async def _running(self, connector: str, services: set[str],
                       token: str | None) -> dict[str, int]:
        """The managed services that still run there, with their counts."""
        counts = await self.client.bulk_status(connector, token)
        if counts is None:
            names = sorted(services)
            counts = dict(zip(names, await each(
                names, self.concurrency,
                lambda service: self.client.status(connector, service, token))))
        return {s: n for s, n in counts.items() if s in services and n > 0}
