"""The calls to one compute's connector: observe and order, timed and contained.

Needs no store: a ComputeCalls is built from the compute's URL and token, so the
benchmarks and tests can use it alone. Whatever a call meets, an exception of any type
included, ends as a sentence for that (service, compute) pair; every other pair goes on.
`failing_since` says since when every call has gone unanswered (timed out or found
nobody listening; None once the connector answers anything).
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field

from genisys.bounded import each
from genisys.connector import ConnectorClient, ConnectorError
from genisys.jsonbody import excerpt
from genisys.metrics import ReplicaMetrics

log = logging.getLogger(__name__)

# The longest sentence recorded per pair: a status record holds one per compute, and the
# leader writes up to 62 records per Consul transaction (at most 512 KiB).
MAX_SENTENCE = 300
# ConnectorError kinds of a call the connector never answered.
UNANSWERED = ("timeout", "unreachable")


@dataclass
class Observation:
    """What one compute said of some services."""
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)  # reported by the connector
    per_service: bool = False  # status calls, which carry targets (a bulk call does not)


class ComputeCalls:
    def __init__(self, client: ConnectorClient, compute: str, url: str, token: str | None,
                 concurrency: int, metrics: ReplicaMetrics):
        self.client = client
        self.compute = compute
        self.url = url
        self.token = token
        self.concurrency = concurrency
        self.limit = asyncio.Semaphore(concurrency)  # calls in flight to this connector
        self.metrics = metrics
        self.failing_since: float | None = None  # time.monotonic() of the first failure
        self.reports_targets = False  # its status answers have named a target
        self._unexpected: set[str] = set()  # unexpected errors already logged

    async def observe(self, services: set[str], bulk: bool) -> Observation:
        """Every service's count: one bulk call (when `bulk` and the connector has the
        extension), else one status call per service."""
        observation = Observation(per_service=not bulk)
        if not services:
            return observation
        if bulk:
            try:
                async with self.limit:
                    counts = await self._timed("bulk_status",
                                               self.client.bulk_status(self.url, self.token))
            except Exception as exc:
                sentence = self.failure(exc, f"observing {self.compute}")
                observation.errors = dict.fromkeys(services, sentence)
                return observation
            if counts is not None:
                observation.counts = {s: counts.get(s, 0) for s in services}
                return observation
            observation.per_service = True  # the connector lacks the bulk extension

        async def one(service: str) -> None:
            try:
                async with self.limit:
                    count, target = await self._timed(
                        "status", self.client.progress(self.url, service, self.token))
            except Exception as exc:
                observation.errors[service] = self.failure(
                    exc, f"observing {service} on {self.compute}")
                return
            observation.counts[service] = count
            if target is not None:
                observation.targets[service] = target
                self.reports_targets = True

        await each(services, self.concurrency, one)
        return observation

    async def order(self, service: str, number: int, term) -> int:
        """Send one order; the count running afterwards. Raises what the call met."""
        async with self.limit:
            return await self._timed("scale", self.client.order(
                self.url, service, number, term, self.token))

    async def _timed(self, call: str, request):
        """Await a connector call, recording its duration and, if it fails, its kind."""
        started = time.monotonic()
        try:
            result = await request
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            kind = getattr(exc, "kind", "unexpected")
            self.metrics.connector_error(self.compute, kind)
            if kind not in UNANSWERED:
                self.failing_since = None  # it answered, if not what it should
            elif self.failing_since is None:
                self.failing_since = started
            raise
        finally:
            self.metrics.connector_call(self.compute, call, time.monotonic() - started)
        self.failing_since = None
        return result

    def failure(self, exc: Exception, doing: str) -> str:
        """The sentence recorded for a pair, short. Anything but a ConnectorError is a bug:
        its traceback is logged once per worker, not once per pair and observation."""
        if isinstance(exc, ConnectorError):
            return excerpt(str(exc), MAX_SENTENCE)
        sentence = f"unexpected error: {type(exc).__name__}: {excerpt(str(exc))}"
        if sentence not in self._unexpected:
            self._unexpected.add(sentence)
            log.error("%s failed unexpectedly; recorded for that pair only", doing,
                      exc_info=exc)
        return sentence


def timed_out(exc: Exception) -> bool:
    """Whether a failed order may still be carried out: the connector did not answer in
    time, so it may be working on it."""
    return isinstance(exc, ConnectorError) and exc.kind == "timeout"
