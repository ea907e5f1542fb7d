"""ConsulStore: the only module that speaks to Consul.

It uses py-consul's API classes over Tornado's own HTTP client (an adapter below), so
every Consul call runs on the same event loop as the API without a second HTTP stack.

Reads of the compute registry are served from a PrefixView: a local copy of the prefix
kept current by Consul blocking queries (an "informer", in Kubernetes terms). A replica
sees its own writes at once because every write refreshes the view before returning;
`consistent=True` reads bypass the view and ask Consul's leader.
"""

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

import consul.base
from consul.exceptions import ConsulException
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from genisys.model import Compute, ValidationError

log = logging.getLogger(__name__)

# Long enough for a quiet prefix to cost almost nothing, short enough that a Consul that
# hangs (rather than refusing connections) is noticed within seconds.
WATCH_WAIT_SECONDS = 10


class ConsulUnavailable(Exception):
    """Consul did not answer, or answered with a server error."""


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class _TornadoHTTPClient(consul.base.HTTPClient):
    """py-consul's transport, on Tornado's AsyncHTTPClient."""

    def __init__(self, *args, timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._client = AsyncHTTPClient(force_instance=True, max_clients=100)

    async def _request(self, callback, method, path, params, data=None, headers=None):
        request_timeout = self.timeout
        wait = dict(params or ()).get("wait")
        if wait:  # a blocking query: Consul may hold it for wait + wait/16
            request_timeout += float(wait.rstrip("s")) * 17 / 16
        request = HTTPRequest(
            self.uri(path, params), method=method, headers=headers,
            body=None if method == "GET" else (data or ""),
            allow_nonstandard_methods=True, connect_timeout=self.timeout,
            request_timeout=request_timeout, validate_cert=bool(self.verify))
        try:
            response = await self._client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # refused, reset, or timed out (599)
            raise ConsulUnavailable(f"Consul at {self.base_uri} is unreachable: {exc}") from None
        if response.code >= 500:
            raise ConsulUnavailable(f"Consul at {self.base_uri} answered {response.code}: "
                                    f"{response.body.decode(errors='replace').strip()[:200]}")
        body = response.body.decode("utf-8", errors="replace") if response.body else ""
        return callback(consul.base.Response(response.code, response.headers, body))

    def get(self, callback, path, params=None, headers=None, raw=False):
        return self._request(callback, "GET", path, params, headers=headers)

    def put(self, callback, path, params=None, data="", headers=None):
        return self._request(callback, "PUT", path, params, data, headers)

    def delete(self, callback, path, params=None, data="", headers=None):
        return self._request(callback, "DELETE", path, params, headers=headers)

    def post(self, callback, path, params=None, data="", headers=None):
        return self._request(callback, "POST", path, params, data, headers)

    def close(self):
        self._client.close()


class _Consul(consul.base.Consul):
    def __init__(self, *args, timeout: float, **kwargs):
        self._timeout = timeout
        super().__init__(*args, **kwargs)

    def http_connect(self, host, port, scheme, verify=True, cert=None):
        return _TornadoHTTPClient(host, port, scheme, verify, cert, timeout=self._timeout)


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    create_index: int
    modify_index: int


class PrefixView:
    """A local copy of every key under a prefix, kept current by blocking queries.

    `entries` is only trustworthy while `synced`; after a failed query it is not, until
    the next successful one. `on_change` is called after each change of the copy.
    """

    def __init__(self, client: _Consul, prefix: str, on_change: Callable[[], None] | None = None):
        self._client = client
        self.prefix = prefix
        self.on_change = on_change
        self.entries: dict[str, Entry] = {}
        self.index = 0
        self.synced = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def refresh(self) -> None:
        """Read the prefix now (not blocking) and install it: read-your-writes."""
        try:
            index, items = await self._client.kv.get(self.prefix, recurse=True)
        except (ConsulUnavailable, ConsulException):
            self.synced = False
            raise
        self._install(int(index), items, force=False)

    async def _watch(self) -> None:
        failures = 0
        while True:
            try:
                index, items = await self._client.kv.get(
                    self.prefix, recurse=True, index=self.index or None,
                    wait=f"{WATCH_WAIT_SECONDS}s")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watch must never die; it retries with back-off
                if self.synced or failures == 0:
                    log.warning("lost the watch on %s: %s", self.prefix, exc)
                self.synced = False
                failures += 1
                await asyncio.sleep(min(0.1 * 2 ** failures, 2.0))
                continue
            if failures:
                log.info("watching %s again", self.prefix)
            failures = 0
            index = int(index)
            # Consul's indexes can go backwards (e.g. a restored snapshot); start over then.
            self._install(index, items, force=index < self.index)

    def _install(self, index: int, items, force: bool) -> None:
        if index < self.index and not force:
            return  # an older answer than the one we hold
        entries = {item["Key"]: Entry(item["Key"], item.get("Value") or b"",
                                      item["CreateIndex"], item["ModifyIndex"])
                   for item in items or ()}
        changed = entries != self.entries
        self.entries, self.index, self.synced = entries, index, True
        if changed and self.on_change:
            self.on_change()


class ConsulStore:
    """Every read and write of Genisys's state in Consul."""

    def __init__(self, host: str, port: int, *, scheme: str = "http", token: str = "",
                 key_prefix: str = "genisys/", resources_key_prefix: str = "skynet/resources/",
                 timeout: float = 5.0):
        self.address = f"{scheme}://{host}:{port}"
        self.key_prefix = key_prefix
        self.resources_key_prefix = resources_key_prefix
        self.computes_prefix = f"{key_prefix}computes/"
        self.placements_prefix = f"{key_prefix}placements/"
        self.consul = _Consul(host, port, token=token or None, scheme=scheme, timeout=timeout)
        self.computes_view = PrefixView(self.consul, self.computes_prefix)

    @classmethod
    def from_config(cls, section) -> "ConsulStore":
        return cls(section.host, section.port, scheme=section.scheme, token=section.token,
                   key_prefix=section.key_prefix,
                   resources_key_prefix=section.resources_key_prefix, timeout=section.timeout)

    def start(self) -> None:
        self.computes_view.start()

    async def close(self) -> None:
        await self.computes_view.stop()
        self.consul.http.close()

    async def ping(self) -> str:
        """The address of Consul's raft leader; ConsulUnavailable when there is none."""
        leader = await self.consul.status.leader()
        if not leader:
            raise ConsulUnavailable(f"Consul at {self.address} has no leader")
        return leader

    # -- computes ---------------------------------------------------------------------

    async def list_computes(self, consistent: bool = False) -> list[Compute]:
        """Every compute, in definition order (Consul CreateIndex: oldest first)."""
        entries = await self._compute_entries(consistent)
        computes = []
        for entry in sorted(entries, key=lambda e: (e.create_index, e.key)):
            compute = self._decode_compute(entry)
            if compute:
                computes.append(compute)
        return computes

    async def get_compute(self, name: str, consistent: bool = False) -> Compute | None:
        key = self.computes_prefix + name
        if consistent or not self.computes_view.synced:
            _, item = await self.consul.kv.get(key, consistency="consistent" if consistent else None)
            entry = item and Entry(key, item.get("Value") or b"", item["CreateIndex"],
                                   item["ModifyIndex"])
        else:
            entry = self.computes_view.entries.get(key)
        return entry and self._decode_compute(entry)

    async def create_compute(self, compute: Compute) -> None:
        """Create, never overwrite (check-and-set on index 0); Conflict when it exists."""
        created = await self.consul.kv.put(self.computes_prefix + compute.name,
                                           _to_json(compute.to_dict()), cas=0)
        if not created:
            raise Conflict(f"compute {compute.name!r} already exists.")
        await self._refresh_computes()

    async def put_compute(self, compute: Compute) -> bool:
        """Create or replace a compute; True when it was created."""
        key = self.computes_prefix + compute.name
        while True:
            _, item = await self.consul.kv.get(key)
            index = item["ModifyIndex"] if item else 0
            if await self.consul.kv.put(key, _to_json(compute.to_dict()), cas=index):
                await self._refresh_computes()
                return index == 0

    async def delete_compute(self, name: str) -> None:
        """Delete a compute that holds no resources; NotFound, or Conflict while it does."""
        key = self.computes_prefix + name
        while True:
            _, item = await self.consul.kv.get(key)
            if item is None:
                raise NotFound(f"compute {name!r} does not exist.")
            holders = await self._services_placed_on(name)
            if holders:
                service, count = holders[0]
                raise Conflict(f"compute {name!r} still holds {count} resources of service "
                               f"{service!r}: scale them elsewhere or to 0 first.")
            if await self.consul.kv.delete(key, cas=item["ModifyIndex"]):
                await self._refresh_computes()
                return

    async def _compute_entries(self, consistent: bool) -> list[Entry]:
        if consistent or not self.computes_view.synced:
            _, items = await self.consul.kv.get(
                self.computes_prefix, recurse=True,
                consistency="consistent" if consistent else None)
            return [Entry(i["Key"], i.get("Value") or b"", i["CreateIndex"], i["ModifyIndex"])
                    for i in items or ()]
        return list(self.computes_view.entries.values())

    async def _refresh_computes(self) -> None:
        try:
            await self.computes_view.refresh()
        except (ConsulUnavailable, ConsulException) as exc:
            # The write itself succeeded; reads fall back to Consul until the watch resyncs.
            log.warning("could not refresh the compute view after a write: %s", exc)

    async def _services_placed_on(self, compute: str) -> list[tuple[str, int]]:
        _, items = await self.consul.kv.get(self.placements_prefix, recurse=True)
        holders = []
        for item in items or ():
            placement = _from_json(item.get("Value"))
            count = placement.get(compute) if isinstance(placement, dict) else None
            if isinstance(count, int) and count > 0:
                holders.append((item["Key"][len(self.placements_prefix):], count))
        return holders

    def _decode_compute(self, entry: Entry) -> Compute | None:
        """A compute from its KV entry; None (and a warning) for a value that is not one."""
        try:
            compute = Compute.from_dict(_from_json(entry.value))
        except ValidationError as exc:
            _warn_once(f"ignoring {entry.key}: its value is not a compute definition ({exc})")
            return None
        if compute.name != entry.key[len(self.computes_prefix):]:
            _warn_once(f"ignoring {entry.key}: its value names compute {compute.name!r}")
            return None
        return compute


def _to_json(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _from_json(raw: bytes | str | None):
    """KV values arrive as bytes: decode them before use, and treat junk as None."""
    if raw is None:
        return None
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError):
        return None


_warned: dict[str, float] = {}


def _warn_once(message: str, every: float = 300.0) -> None:
    """Log a recurring data problem once every few minutes, not on every read."""
    now = time.monotonic()
    if now - _warned.get(message, -every) >= every:
        _warned[message] = now
        log.warning(message)
