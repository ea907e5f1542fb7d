"""ConsulStore: the only module that speaks to Consul.

It uses py-consul's API classes over Tornado's HTTP client (an adapter below), so every
Consul call runs on the same event loop as the API.

Reads of the compute registry are served from a PrefixView: a local copy of the prefix
kept current by Consul blocking queries (an "informer", in Kubernetes terms). A replica
sees its own writes at once because every write refreshes the view before returning;
`consistent=True` reads bypass the view and ask Consul's leader.
"""

import asyncio
import base64
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import consul.base
from consul.exceptions import ConsulException
from tornado.httpclient import HTTPClientError, HTTPRequest

from genisys.httpclient import close_client, curl_client
from genisys.model import Compute, ValidationError, validate_number
from genisys.plan import Desired
from genisys.protocol import MAX_TERM

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
    """py-consul's transport, on Tornado's curl client (genisys.httpclient)."""

    def __init__(self, *args, timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._client = curl_client(max_connections=100)

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
            reason = str(exc).removeprefix("HTTP 599: ")
            raise ConsulUnavailable(f"Consul at {self.base_uri} is unreachable: {reason}") from None
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
        close_client(self._client)


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


@dataclass(frozen=True)
class DesiredRecord:
    """A service's desired total and placement, with their ModifyIndexes (0: absent)."""
    total: int | None
    total_index: int
    placement: dict[str, int]
    placement_index: int


class PrefixView:
    """A local copy of every key under a prefix, kept current by blocking queries.

    `entries` is only trustworthy while `synced`; after a failed query it is not, until
    the next successful one. `on_change` is called with the changed keys after each change.
    A replica's own writes show at once (`write_through`), without re-reading the prefix:
    that would cost a read of every key per write.
    """

    def __init__(self, client: _Consul, prefix: str,
                 on_change: Callable[[set[str]], None] | None = None):
        self._client = client
        self.prefix = prefix
        self.on_change = on_change
        self.entries: dict[str, Entry] = {}
        self.index = 0
        self.synced = False
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
        self._set({**self.entries, **self._own}, self.index)

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
        entries = {item["Key"]: _entry(item) for item in items or ()}
        self._own = {} if force else {k: e for k, e in self._own.items() if e.modify_index > index}
        entries.update(self._own)
        self.synced = True
        self._set(entries, index)

    def _set(self, entries: dict[str, Entry], index: int) -> None:
        # A new dict each time: readers may cache what they derive from `entries` by identity.
        changed = {key for key in entries.keys() | self.entries.keys()
                   if entries.get(key) != self.entries.get(key)}
        self.entries, self.index = entries, index
        if changed and self.on_change:
            self.on_change(changed)


# -- leader election: values and errors (methods in ConsulStore's election section) --

SERVICE_NAME = "genisys"  # the catalog service every replica registers as


class CheckMissing(Exception):
    """The local Consul agent does not know this replica's TTL check (it was restarted
    without its data, or someone deregistered the replica): register again."""


class SessionInvalid(Exception):
    """Consul no longer knows the session (invalidated or destroyed): create a new one."""


@dataclass(frozen=True)
class LeaderLock:
    """The leader key as read: who holds it (session), its term (LockIndex), its value."""
    session: str | None
    lock_index: int
    modify_index: int
    value: dict


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
        self.status_prefix = f"{key_prefix}status/"
        self.leader_key = f"{key_prefix}leader"
        self.term_key = f"{key_prefix}term"
        self.consul = _Consul(host, port, token=token or None, scheme=scheme, timeout=timeout)
        self.computes_view = PrefixView(self.consul, self.computes_prefix)
        self._decoded_from: dict | None = None  # the view entries _decoded was made from
        self._decoded: tuple[list[tuple[Compute, int]], dict[str, Compute]] = ([], {})
        self.resources_view = PrefixView(self.consul, resources_key_prefix)
        self.placements_view = PrefixView(self.consul, self.placements_prefix)
        # Statuses are not watched: the leader rewrites them after its orders, and every
        # replica re-reading them would cost as much as the changes that matter.
        self._views = (self.computes_view, self.resources_view, self.placements_view)

    @classmethod
    def from_config(cls, section) -> "ConsulStore":
        return cls(section.host, section.port, scheme=section.scheme, token=section.token,
                   key_prefix=section.key_prefix,
                   resources_key_prefix=section.resources_key_prefix, timeout=section.timeout)

    def start(self) -> None:
        for view in self._views:
            view.start()

    async def close(self) -> None:
        for view in self._views:
            await view.stop()
        self.consul.http.close()

    async def ping(self) -> str:
        """The address of Consul's raft leader; ConsulUnavailable when there is none."""
        leader = await self.consul.status.leader()
        if not leader:
            raise ConsulUnavailable(f"Consul at {self.address} has no leader")
        return leader

    # -- leader election: catalog registration, TTL check, session, lock ----------------
    # Used by genisys/leader.py only; the lock is `leader_key`, held by a session bound
    # to the replica's TTL check.

    async def register_replica(self, service_id: str, check_id: str, host: str, port: int,
                               ttl: float, replica_id: str) -> None:
        """Register this replica in the catalog with a TTL check; idempotent.

        The check starts passing: a session can only be bound to a passing check, and
        registering again (after an agent restart) must not fail a live session's check.
        """
        check = {"CheckID": check_id, "Name": f"genisys replica {replica_id} heartbeat",
                 "TTL": f"{ttl:g}s", "Status": "passing",
                 # a replica killed with -9 leaves the catalog on its own, a minute later
                 "DeregisterCriticalServiceAfter": "1m"}
        await self.consul.agent.service.register(
            SERVICE_NAME, service_id=service_id, address=host, port=port, check=check,
            meta={"replica": replica_id})

    async def deregister_replica(self, service_id: str) -> None:
        await self.consul.agent.service.deregister(service_id)

    async def pass_check(self, check_id: str) -> None:
        """Mark the TTL check passing; CheckMissing when the agent does not know it."""
        try:
            if await self.consul.agent.check.ttl_pass(check_id):
                return
        except ConsulUnavailable:
            # Consul 1.8 answers an unknown check with a 500, later versions a 404: ask
            # the agent (this raises ConsulUnavailable in turn when it is really down).
            if check_id in await self.consul.agent.checks():
                raise
            raise CheckMissing(f"the Consul agent does not know check {check_id}") from None
        if check_id not in await self.consul.agent.checks():
            raise CheckMissing(f"the Consul agent does not know check {check_id}")
        raise ConsulUnavailable(f"Consul at {self.address} refused to pass check {check_id}")

    async def create_session(self, name: str, check_id: str, lock_delay: float) -> str:
        """A session bound to serfHealth and the TTL check, behaviour release.

        Consul takes the lock-delay in whole seconds here: rounded up, at least 0.
        """
        return await self.consul.session.create(
            name=name, checks=["serfHealth", check_id], behavior="release",
            lock_delay=max(0, math.ceil(lock_delay)))

    async def destroy_session(self, session: str) -> None:
        await self.consul.session.destroy(session)

    async def sessions_bound_to(self, check_id: str) -> list[str]:
        """The ids of the sessions bound to check `check_id`."""
        _, sessions = await self.consul.session.list()
        return [s["ID"] for s in sessions or ()
                if check_id in (s.get("Checks") or ())
                or any(c.get("ID") == check_id for c in s.get("ServiceChecks") or ())]

    async def acquire_leader(self, session: str, value: dict) -> bool:
        """Try to take the leader lock; SessionInvalid when the session is gone."""
        try:
            return await self.consul.kv.put(self.leader_key, _to_json(value), acquire=session)
        except ConsulUnavailable as exc:
            if "invalid session" in str(exc):
                raise SessionInvalid(str(exc)) from None
            raise

    async def release_leader(self, session: str, value: dict | None = None) -> bool:
        """Release the lock if `session` holds it (False otherwise), writing `value`."""
        return await self.consul.kv.put(
            self.leader_key, _to_json(value) if value is not None else None, release=session)

    async def read_leader(self, index: int = 0,
                          wait: float | None = None) -> tuple[int, LeaderLock | None]:
        """The leader key (None when absent) and Consul's index; with `index` and `wait`
        a blocking query that returns when the key changes or `wait` seconds passed."""
        index, item = await self.consul.kv.get(
            self.leader_key, index=index or None,
            wait=f"{wait:.3f}s" if wait and index else None)
        if item is None:
            return int(index), None
        value = _from_json(item.get("Value"))
        return int(index), LeaderLock(session=item.get("Session"),
                                      lock_index=item.get("LockIndex", 0),
                                      modify_index=item["ModifyIndex"],
                                      value=value if isinstance(value, dict) else {})

    async def raise_term(self, session: str, above: int) -> int | None:
        """Make the leader's term max(stored term, `above`) + 1, in one transaction guarded
        by `session`'s hold on the leader lock; the new term, or None when `session` no
        longer holds the lock (a deposed leader can never raise it)."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        for _ in range(TERM_ATTEMPTS):
            _, item = await self.consul.kv.get(self.term_key, consistency="consistent")
            stored = _from_json(item and item.get("Value"))
            if not isinstance(stored, int) or isinstance(stored, bool) or stored < 0:
                if item is not None:
                    _warn_once(f"{self.term_key} holds no term; counting from the lock's")
                stored = 0
            term = min(max(stored, above) + 1, MAX_TERM)
            index = item["ModifyIndex"] if item else 0
            if await self._txn([guard, _kv("cas", self.term_key, str(term), index)]) is not None:
                return term
            _, lock = await self.read_leader()
            if lock is None or lock.session != session:
                return None
            # Still ours: the key changed between the read and the write; read it again.
        raise ConsulException(f"{self.term_key} kept changing under the leader's writes")

    # -- computes ---------------------------------------------------------------------

    async def list_computes(self, consistent: bool = False) -> list[Compute]:
        """Every compute, in definition order (Consul CreateIndex: oldest first)."""
        return [compute for compute, _ in await self.compute_entries(consistent)]

    async def compute_entries(self, consistent: bool = False) -> list[tuple[Compute, int]]:
        """Every compute with its ModifyIndex, in definition order (for check-and-set)."""
        if consistent or not self.computes_view.synced:
            _, items = await self.consul.kv.get(
                self.computes_prefix, recurse=True,
                consistency="consistent" if consistent else None)
            return self._decode_computes(_entry(i) for i in items or ())
        return self._view_computes()[0]

    async def get_compute(self, name: str, consistent: bool = False) -> Compute | None:
        if consistent or not self.computes_view.synced:
            _, item = await self.consul.kv.get(self.computes_prefix + name,
                                               consistency="consistent" if consistent else None)
            decoded = item and self._decode_computes([_entry(item)])
            return decoded[0][0] if decoded else None
        return self._view_computes()[1].get(name)

    async def create_compute(self, compute: Compute) -> None:
        """Create, never overwrite (check-and-set on index 0); Conflict when it exists."""
        written = await self._txn([_kv("cas", self.computes_prefix + compute.name,
                                       _to_json(compute.to_dict()), 0)])
        if written is None:
            raise Conflict(f"compute {compute.name!r} already exists.")
        self.computes_view.write_through(written)

    async def put_compute(self, compute: Compute) -> bool:
        """Create or replace a compute; True when it was created."""
        key = self.computes_prefix + compute.name
        while True:
            _, item = await self.consul.kv.get(key)
            seen = item["ModifyIndex"] if item else 0
            written = await self._txn([_kv("cas", key, _to_json(compute.to_dict()), seen)])
            if written is not None:
                self.computes_view.write_through(written)
                return seen == 0

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

    def _view_computes(self) -> tuple[list[tuple[Compute, int]], dict[str, Compute]]:
        """The view's computes, decoded once per change of the view (reads are hot)."""
        entries = self.computes_view.entries
        if self._decoded_from is not entries:
            ordered = self._decode_computes(entries.values())
            self._decoded = (ordered, {c.name: c for c, _ in ordered})
            self._decoded_from = entries
        return self._decoded

    def _decode_computes(self, entries) -> list[tuple[Compute, int]]:
        """Computes with their ModifyIndex in definition order; junk values are skipped
        with a warning."""
        decoded = []
        for entry in sorted(entries, key=lambda e: (e.create_index, e.key)):
            try:
                compute = Compute.from_dict(_from_json(entry.value))
            except ValidationError as exc:
                _warn_once(f"ignoring {entry.key}: its value is not a compute definition ({exc})")
                continue
            if compute.name != entry.key[len(self.computes_prefix):]:
                _warn_once(f"ignoring {entry.key}: its value names compute {compute.name!r}")
                continue
            decoded.append((compute, entry.modify_index))
        return decoded

    # -- desired state: totals, placements, observed status ---------------------------

    async def read_desired(self, service: str) -> DesiredRecord:
        """A service's total and placement, with the indexes a commit must check."""
        _, total = await self.consul.kv.get(self.resources_key_prefix + service)
        _, placement = await self.consul.kv.get(self.placements_prefix + service)
        return DesiredRecord(
            total=_parse_total(total and total.get("Value")),
            total_index=total["ModifyIndex"] if total else 0,
            placement=_parse_placement(placement and placement.get("Value")),
            placement_index=placement["ModifyIndex"] if placement else 0)

    async def commit_desired(self, service: str, total: int, placement: dict[str, int],
                             seen: DesiredRecord, compute_indexes: dict[str, int]) -> bool:
        """Write total and placement in one transaction; False when anything changed since
        `seen` was read (either key, or a compute the placement uses)."""
        ops = [_kv("cas", self.resources_key_prefix + service, str(total), seen.total_index),
               _kv("cas", self.placements_prefix + service, _to_json(placement),
                   seen.placement_index)]
        ops += [_kv("check-index", self.computes_prefix + name, index=index)
                for name, index in compute_indexes.items()]
        written = await self._txn(ops)
        if written is None:
            return False
        self.resources_view.write_through(written[:1])
        self.placements_view.write_through(written[1:2])
        return True

    def desired_snapshot(self, services: set[str] | None = None
                         ) -> tuple[Desired, dict[str, tuple[int, int]]]:
        """The desired state of `services` (None: all) from the views, and per service
        the (total, placement) ModifyIndexes for the leader's check-and-set."""
        self._check_synced()
        computes = {c.name: c.connector for c, _ in self._view_computes()[0]}
        resources = self.resources_view.entries
        if services is None:
            names = [key[len(self.resources_key_prefix):] for key in resources]
        else:
            names = [s for s in services if self.resources_key_prefix + s in resources]
        totals, placements, indexes = {}, {}, {}
        for service in names:
            entry = resources[self.resources_key_prefix + service]
            total = _parse_total(entry.value)
            if total is None:
                _warn_once(f"ignoring {entry.key}: its value {entry.value[:40]!r} is not a count")
                continue
            totals[service] = total
            placement = self.placements_view.entries.get(self.placements_prefix + service)
            placements[service] = _parse_placement(placement and placement.value)
            indexes[service] = (entry.modify_index, placement.modify_index if placement else 0)
        return Desired(computes, totals, placements), indexes

    async def statuses(self, service: str | None = None) -> dict[str, dict]:
        """The leader's last recorded observation of `service` (None: of every service)."""
        if service is None:
            _, items = await self.consul.kv.get(self.status_prefix, recurse=True)
        else:
            _, item = await self.consul.kv.get(self.status_prefix + service)
            items = [item] if item else []
        return {item["Key"][len(self.status_prefix):]: status for item in items or ()
                if isinstance(status := _from_json(item.get("Value")), dict)}

    async def service_records(self, service: str | None = None) -> dict[str, dict]:
        """Desired total, placement and last observed status of `service` (None: of every
        known service)."""
        self._check_synced()
        statuses = await self.statuses(service)
        if service is None:
            names = sorted({key[len(prefix):] for view, prefix in (
                (self.resources_view, self.resources_key_prefix),
                (self.placements_view, self.placements_prefix)) for key in view.entries}
                | set(statuses))
        else:
            names = [service]
        records = {}
        for name in names:
            total = self.resources_view.entries.get(self.resources_key_prefix + name)
            placement = self.placements_view.entries.get(self.placements_prefix + name)
            if total is None and placement is None and name not in statuses:
                continue
            observed = statuses.get(name, {})
            records[name] = {
                "desired": _parse_total(total and total.value),
                "placement": _parse_placement(placement and placement.value),
                "observed": observed.get("observed", {}),
                "errors": observed.get("errors", {}),
                "warnings": observed.get("warnings", {}),
                "observed_at": observed.get("observed_at"),
            }
        return records

    def _check_synced(self) -> None:
        if not all(view.synced for view in self._views):
            raise ConsulUnavailable(f"Consul at {self.address} is not answering: the local "
                                    "view of its state is not in sync")

    async def catalog_services(self, prefix: str) -> list[str]:
        """Services in Consul's catalog whose name starts with `prefix`."""
        _, services = await self.consul.catalog.services()
        return sorted(name for name in services if name.startswith(prefix))

    async def leader_write(self, session: str, placements: dict[str, tuple[dict, int, int]],
                           statuses: dict[str, dict]) -> bool:
        """The leader's writes, each transaction guarded by its hold on the lock.

        placements: service -> (placement, total ModifyIndex, placement ModifyIndex): a
        placement is written only if neither key changed since the leader read them.
        Returns False when a transaction was refused (lock lost, or a key changed).
        """
        ops = []
        for service, (placement, total_index, placement_index) in placements.items():
            ops.append(_kv("check-index", self.resources_key_prefix + service,
                           index=total_index))
            ops.append(_kv("cas", self.placements_prefix + service, _to_json(placement),
                           placement_index))
        ops += [_kv("set", self.status_prefix + service, _to_json(status))
                for service, status in statuses.items()]
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        ok = True
        # Consul allows 64 operations per transaction; a placement's two stay together.
        for start in range(0, len(ops), TXN_BATCH):
            ok = await self._txn([guard, *ops[start:start + TXN_BATCH]]) is not None and ok
        return ok

    async def _txn(self, ops: list[dict]) -> list[Entry] | None:
        """Run a Consul transaction: the entries its set and cas operations wrote, in
        order, or None when it was rolled back."""
        values = [base64.b64decode(op["KV"]["Value"]) for op in ops
                  if op["KV"]["Verb"] in ("set", "cas")]

        def outcome(response):
            if response.code == 409:
                return None
            if response.code != 200:
                raise ConsulException(f"transaction refused ({response.code}): "
                                      f"{response.body[:200]}")
            results = [r["KV"] for r in json.loads(response.body).get("Results") or ()
                       if r.get("KV") and r["KV"]["Key"] in written_keys]
            return [Entry(r["Key"], value, r["CreateIndex"], r["ModifyIndex"])
                    for r, value in zip(results, values)]

        written_keys = {op["KV"]["Key"] for op in ops if op["KV"]["Verb"] in ("set", "cas")}
        return await self.consul.http.put(outcome, "/v1/txn", data=json.dumps(ops),
                                          headers=self.consul.prepare_headers())


# A leader's term key changes only under its own writes: a few attempts are plenty.
TERM_ATTEMPTS = 5

# Even, so that a placement's check-index and cas never straddle two transactions.
TXN_BATCH = 62


def _entry(item: dict) -> Entry:
    return Entry(item["Key"], item.get("Value") or b"", item["CreateIndex"], item["ModifyIndex"])


def _kv(verb: str, key: str, value: str | None = None, index: int | None = None) -> dict:
    op = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = base64.b64encode(value.encode()).decode()
    if index is not None:
        op["Index"] = index
    return {"KV": op}


def _parse_total(raw) -> int | None:
    """A desired total as other Skynet components write it: a decimal string."""
    if raw is None:
        return None
    try:
        return validate_number(raw.decode() if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValidationError):
        return None


def _parse_placement(raw) -> dict[str, int]:
    value = _from_json(raw)
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items()
            if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0}


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
