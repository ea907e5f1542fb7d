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
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import consul.base
from consul.exceptions import ConsulException
from tornado.httpclient import HTTPClientError, HTTPRequest

from genisys.auth import valid_record
from genisys.httpclient import close_client, curl_client
from genisys.metrics import ReplicaMetrics, consul_op
from genisys.model import (
    NAME_PATTERN,
    Compute,
    ValidationError,
    url_identity,
    validate_number,
    validate_url,
)
from genisys.plan import Desired
from genisys.protocol import MAX_TERM
from genisys.velocity import Steps, stored_overrides

log = logging.getLogger(__name__)

# Long enough for a quiet prefix to cost almost nothing, short enough that a Consul that
# hangs (rather than refusing connections) is noticed within seconds.
WATCH_WAIT_SECONDS = 10
# A registry change that keeps losing races to others gives up after this many tries.
MAX_ATTEMPTS = 20


class ConsulUnavailable(Exception):
    """Consul did not answer, or answered with a server error."""


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class PermissionDenied(ConsulException):
    """Consul's ACLs refused the request: the message names the rule the token lacks.

    A ConsulException, so that whatever survives Consul's refusals survives this one."""


UNKNOWN_TOKEN = ("Consul does not know the configured ACL token: check consul.token or "
                 "CONSUL_HTTP_TOKEN.")


def denied_key(key: str, access: str, key_prefixes=()) -> str:
    """The sentence for a denied `access` ("read" or "write") of `key`, naming the rule
    the README's minimal policy grants for it: its configured prefix's."""
    prefix = max((p for p in key_prefixes if key.startswith(p)), key=len, default=None)
    rule = f'key_prefix "{prefix}"' if prefix else f'key "{key[:200]}"'
    return f"Consul denied key {access} on {key[:200]}: the token needs {rule} {access}."


class _TornadoHTTPClient(consul.base.HTTPClient):
    """py-consul's transport, on Tornado's curl client (genisys.httpclient)."""

    def __init__(self, *args, timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._client = curl_client(max_connections=100)
        self.metrics: ReplicaMetrics | None = None  # ConsulStore sets it
        self.key_prefixes: tuple[str, ...] = ()  # the rules a denial names (ConsulStore sets them)

    async def _request(self, callback, method, path, params, data=None, headers=None):
        response = await self._fetch(method, path, params, data, headers)
        if response.code == 403:
            raise PermissionDenied(UNKNOWN_TOKEN if b"ACL not found" in response.body
                                   else self._denial(method, path))
        if response.code == 404 and method == "GET" and path.startswith("/v1/kv/") \
                and "recurse" in dict(params or ()):
            # Consul answers a recursive read it filtered out entirely with a 404, as for an
            # empty prefix; a read of the prefix itself tells the two apart (403 if denied).
            single = await self._fetch("GET", path, None, None, headers)
            if single.code == 403:
                raise PermissionDenied(UNKNOWN_TOKEN if b"ACL not found" in single.body
                                       else self._denial(method, path))
        body = response.body.decode("utf-8", errors="replace") if response.body else ""
        return callback(consul.base.Response(response.code, response.headers, body))

    async def _fetch(self, method, path, params, data, headers):
        request_timeout = self.timeout
        wait = dict(params or ()).get("wait")
        if wait:  # a blocking query: Consul may hold it for wait + wait/16
            request_timeout += float(wait.rstrip("s")) * 17 / 16
        request = HTTPRequest(
            self.uri(path, params), method=method, headers=headers,
            body=None if method == "GET" else (data or ""),
            allow_nonstandard_methods=True, connect_timeout=self.timeout,
            request_timeout=request_timeout, validate_cert=bool(self.verify),
            # py-consul's verify: True, False or a CA file; cert: (cert file, key file)
            ca_certs=self.verify if isinstance(self.verify, str) else None,
            client_cert=self.cert[0] if self.cert else None,
            client_key=self.cert[1] if self.cert else None)
        started = time.monotonic()
        try:
            response = await self._client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # refused, reset, or timed out (599)
            reason = str(exc).removeprefix("HTTP 599: ")
            raise ConsulUnavailable(f"Consul at {self.base_uri} is unreachable: {reason}") from None
        finally:
            if self.metrics:
                self.metrics.consul(consul_op(method, path, params), time.monotonic() - started)
        if response.code >= 500:
            raise ConsulUnavailable(f"Consul at {self.base_uri} answered {response.code}: "
                                    f"{response.body.decode(errors='replace').strip()[:200]}")
        return response

    def _denial(self, method: str, path: str) -> str:
        """The sentence for a request Consul's ACLs refused."""
        if path.startswith("/v1/kv/"):
            return denied_key(path[len("/v1/kv/"):], "read" if method == "GET" else "write",
                              self.key_prefixes)
        if path.startswith("/v1/session/"):
            return ("Consul denied session write on this agent's node: the token needs "
                    'session_prefix "" write.')
        if path.startswith(("/v1/agent/service/", "/v1/agent/check/",
                            "/v1/agent/connect/authorize")):
            return (f"Consul denied service write on {SERVICE_NAME}: the token needs "
                    f'service "{SERVICE_NAME}" write.')
        return f"Consul denied {method} {path[:200]}: the token lacks the permission."

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
class RetiredConnector:
    """A connector that left the registry (its compute deleted or moved): the leader
    scales every service there to 0, then forgets it."""
    key: str
    connector: str
    compute: str
    modify_index: int
    token: str | None = field(default=None, repr=False)  # its compute's, to keep calling it


@dataclass(frozen=True)
class DesiredRecord:
    """A service's desired total and placement, with their ModifyIndexes (0: absent)."""
    total: int | None
    total_index: int
    placement: dict[str, int]
    placement_index: int
    flags: dict = field(default_factory=dict)  # lifecycle flags: paused, deleting
    flags_index: int = 0

    @property
    def index(self) -> int:
        """What a scale's If-Match checks: the later of the two ModifyIndexes."""
        return max(self.total_index, self.placement_index)


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
        self.error: Exception | None = None  # why the last read failed, while not synced
        self.out_of_sync_since: float | None = time.monotonic()  # None while synced
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
        except (ConsulUnavailable, ConsulException) as exc:
            self._lost(exc)
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
                if self.synced or failures == 0 or str(exc) != str(self.error):
                    log.warning("lost the watch on %s: %s", self.prefix, exc)
                self._lost(exc)
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
        self.synced, self.error, self.out_of_sync_since = True, None, None
        self._set(entries, index)

    def _lost(self, exc: Exception) -> None:
        if self.synced:
            self.out_of_sync_since = time.monotonic()
        self.synced, self.error = False, exc

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
                 timeout: float = 5.0, verify: bool | str = True,
                 cert: tuple[str, str] | None = None, metrics: ReplicaMetrics | None = None):
        self.address = f"{scheme}://{host}:{port}"
        self.key_prefix = key_prefix
        self.resources_key_prefix = resources_key_prefix
        self.computes_prefix = f"{key_prefix}computes/"
        self.placements_prefix = f"{key_prefix}placements/"
        self.status_prefix = f"{key_prefix}status/"
        self.retired_prefix = f"{key_prefix}retired/"
        self.events_prefix = f"{key_prefix}events/"
        self.lifecycle_prefix = f"{key_prefix}lifecycle/"
        self.leader_key = f"{key_prefix}leader"
        self.term_key = f"{key_prefix}term"
        self.consul = _Consul(host, port, token=token or None, scheme=scheme, timeout=timeout,
                              verify=verify, cert=cert)
        self.consul.http.key_prefixes = (key_prefix, resources_key_prefix)
        self.computes_view = PrefixView(self.consul, self.computes_prefix)
        self._decoded_from: dict | None = None  # the view entries _decoded was made from
        self._decoded: tuple[list[tuple[Compute, int]], dict[str, Compute]] = ([], {})
        self.resources_view = PrefixView(self.consul, resources_key_prefix)
        self.placements_view = PrefixView(self.consul, self.placements_prefix)
        # Pause and delete flags: few, rarely written, and every cycle needs them.
        self.lifecycle_view = PrefixView(self.consul, self.lifecycle_prefix)
        # Statuses and events are not watched: the leader rewrites them after its orders,
        # and every replica re-reading them would cost as much as the changes that matter.
        self.tokens_prefix = f"{key_prefix}tokens/"
        self.tokens_view = PrefixView(self.consul, self.tokens_prefix)
        self._views = (self.computes_view, self.resources_view, self.placements_view,
                       self.lifecycle_view, self.tokens_view)
        # Whoever reacts to changes (the leader, while it leads): see subscribe().
        self._listeners: list[tuple[Callable[[set[str]], None], Callable[[], None]]] = []
        for view, prefix in ((self.resources_view, resources_key_prefix),
                             (self.placements_view, self.placements_prefix),
                             (self.lifecycle_view, self.lifecycle_prefix)):
            view.on_change = self._services_changed(prefix)
        self.computes_view.on_change = lambda keys: self._computes_changed()
        # The replica's metrics travel with its store, which every part of it holds.
        self.metrics = metrics or ReplicaMetrics()
        self.consul.http.metrics = self.metrics
        for name, view in zip(("computes", "resources", "placements", "lifecycle", "tokens"),
                              self._views):
            self.metrics.watch_view(name, lambda view=view: view.out_of_sync_since)

    def subscribe(self, on_services: Callable[[set[str]], None],
                  on_computes: Callable[[], None]) -> Callable[[], None]:
        """Call on_services(names) when the desired state (total, placement or flags) of
        those services changed, on_computes() when the compute registry changed; returns
        the function that unsubscribes. Called on the event loop, without I/O: a listener
        only notes what changed."""
        listener = (on_services, on_computes)
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _services_changed(self, prefix: str) -> Callable[[set[str]], None]:
        def notify(keys: set[str]) -> None:
            names = {key[len(prefix):] for key in keys}
            for on_services, _ in list(self._listeners):
                on_services(names)
        return notify

    def _computes_changed(self) -> None:
        for _, on_computes in list(self._listeners):
            on_computes()

    @classmethod
    def from_config(cls, section) -> "ConsulStore":
        return cls(section.host, section.port, scheme=section.scheme, token=section.token,
                   key_prefix=section.key_prefix,
                   resources_key_prefix=section.resources_key_prefix, timeout=section.timeout,
                   verify=(section.ca_file or True) if section.verify else False,
                   cert=(section.cert_file, section.key_file) if section.cert_file else None)

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

    async def denied_permissions(self) -> list[str]:
        """What Genisys needs and the ACL token may not do, one sentence each (empty when
        nothing is denied). Changes nothing; ConsulUnavailable when Consul does not answer."""
        keys = (self.computes_prefix, self.placements_prefix, self.status_prefix,
                self.leader_key, self.resources_key_prefix)
        denied = []
        for key in keys:  # a single-key read answers 403 when reading is denied
            try:
                await self.consul.kv.get(key)
            except PermissionDenied as exc:
                denied.append(str(exc))
        # Consul checks every operation's permission before it runs any; a delete-cas of a
        # key that does not exist (or has another index) changes nothing when allowed.
        ops = [_kv("delete-cas", key, index=1) for key in keys]
        try:
            denied += await self.consul.http.put(
                lambda response: _denials(ops, response.body, self.consul.http.key_prefixes),
                "/v1/txn", data=json.dumps(ops), headers=self.consul.prepare_headers())
        except PermissionDenied as exc:
            denied.append(str(exc))
        try:  # allowed, it fails on the missing check ("Missing check ... registration")
            session = await self.consul.session.create(checks=[f"{SERVICE_NAME}-acl-probe"])
            await self.consul.session.destroy(session)
        except PermissionDenied as exc:
            denied.append(str(exc))
        except ConsulUnavailable as exc:
            if "Missing check" not in str(exc):
                raise
        try:  # Consul checks service write on Target first, then the (foreign) certificate
            await self.consul.http.post(
                lambda response: None, "/v1/agent/connect/authorize",
                data=json.dumps({"Target": SERVICE_NAME, "ClientCertURI": _PROBE_CERT_URI}),
                headers=self.consul.prepare_headers())
        except PermissionDenied as exc:
            denied.append(str(exc))
        except ConsulUnavailable:
            pass  # cannot tell here; a denied registration shows in the election's state
        return list(dict.fromkeys(denied))  # an unknown token says so once

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

    async def check_statuses(self, check_id: str) -> list[str]:
        """The status of every check with this id, on any node of the cluster."""
        _, checks = await self.consul.health.checks(SERVICE_NAME)
        return [c.get("Status", "") for c in checks or () if c.get("CheckID") == check_id]

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

    async def read_term(self) -> int | None:
        """The last leader's term as stored (None before the first leader), for GET /leader."""
        _, item = await self.consul.kv.get(self.term_key)
        term = _from_json(item and item.get("Value"))
        return term if isinstance(term, int) and not isinstance(term, bool) else None

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
        """Create, never overwrite; Conflict when the name exists or another compute
        has the same connector."""
        if not await self._create_compute(compute):
            raise Conflict(f"compute {compute.name!r} already exists.")

    async def _create_compute(self, compute: Compute) -> bool:
        """Create with the claim of its connector; False when the name exists."""
        for _ in range(MAX_ATTEMPTS):
            self._check_connector_free(compute)
            written = await self._txn([
                _kv("cas", self.computes_prefix + compute.name, _to_json(compute.to_dict()), 0),
                _kv("cas", self._claim_key(compute.connector), compute.name, 0),
                # A connector taken back by a compute is watched through it again.
                _kv("delete", self._retired_key(compute.connector))])
            if written is not None:
                self.computes_view.write_through(written[:1])
                return True
            if await self._read(self.computes_prefix + compute.name) is not None:
                return False
            await self._explain_claim(compute)
        raise ConsulUnavailable(f"could not create compute {compute.name!r}: too many "
                                "concurrent changes")

    async def put_compute(self, compute: Compute) -> bool:
        """Create or replace a compute; True when it was created.

        Unchanged: nothing is written (a scale checking the compute is not disturbed).
        A new connector: its old one is retired in the same transaction, and the leader
        scales whatever still runs there to 0 (never forgets an instance).
        """
        key = self.computes_prefix + compute.name
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            if item is None:
                if await self._create_compute(compute):
                    return True
                continue
            current = _stored_compute(item)
            if current is not None and current.deleting:
                raise Conflict(f"compute {compute.name!r} is being deleted: DELETE it again "
                               "to finish, then create it anew.")
            if current == compute:
                return False
            ops = [_kv("cas", key, _to_json(compute.to_dict()), item["ModifyIndex"])]
            moved = current is None or (url_identity(current.connector)
                                        != url_identity(compute.connector))
            if moved:
                self._check_connector_free(compute)
                ops += [_kv("cas", self._claim_key(compute.connector), compute.name, 0),
                        _kv("delete", self._retired_key(compute.connector))]
                if current is not None:
                    ops += await self._retire_ops(current)
            written = await self._txn(ops)
            if written is not None:
                self.computes_view.write_through(written[:1])
                if moved and current is not None:
                    log.info("compute %s moved from %s to %s: the leader scales what runs at "
                             "the old connector to 0", compute.name, current.connector,
                             compute.connector)
                return False
            if moved:
                await self._explain_claim(compute)
        raise ConsulUnavailable(f"could not update compute {compute.name!r}: too many "
                                "concurrent changes")

    async def delete_compute(self, name: str) -> None:
        """Delete a compute that holds no resources; NotFound, or Conflict while it does.

        Two steps, so that a delete and a scale exclude each other inside Consul: the
        compute is first marked "deleting" (a scale placing on it checks its index, so
        it fails and re-reads, and then refuses it); the placements are read after the
        mark; then the compute is deleted at the marked index, or unmarked. Its connector
        is retired in the same transaction: the leader scales what runs there to 0.
        """
        key = self.computes_prefix + name
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            if item is None:
                raise NotFound(f"compute {name!r} does not exist.")
            current, index = _stored_compute(item), item["ModifyIndex"]
            if current is not None and not current.deleting:
                marked = replace(current, deleting=_now())
                written = await self._txn([_kv("cas", key, _to_json(marked.to_dict()), index)])
                if written is None:
                    continue
                self.computes_view.write_through(written)
                current, index = marked, written[0].modify_index
            holders = await self._services_placed_on(name)
            if holders:
                if current is not None:  # give it back as it was
                    written = await self._txn([_kv("cas", key, _to_json(
                        replace(current, deleting=None).to_dict()), index)])
                    if written:
                        self.computes_view.write_through(written)
                service, count = holders[0]
                raise Conflict(f"compute {name!r} still holds {count} resources of service "
                               f"{service!r}: scale them elsewhere or to 0 first.")
            ops = [_kv("delete-cas", key, index=index)]
            if current is not None:
                ops += await self._retire_ops(current)
            if await self._txn(ops) is not None:
                await self._refresh_computes()
                return
        raise ConsulUnavailable(f"could not delete compute {name!r}: too many concurrent "
                                "changes")

    def _check_connector_free(self, compute: Compute) -> None:
        """Conflict when another compute (in this replica's view) has the same connector;
        the claim keys guard it in Consul, this also covers computes older than them."""
        identity = url_identity(compute.connector)
        for other, _ in self._view_computes()[0]:
            if other.name != compute.name and url_identity(other.connector) == identity:
                raise Conflict(_shared_connector(compute, other.name))

    async def _explain_claim(self, compute: Compute) -> None:
        """After a refused transaction: Conflict when another compute claims the
        connector; a stale claim (its compute is gone or moved) is released."""
        claim_key = self._claim_key(compute.connector)
        claim = await self._read(claim_key)
        if claim is None:
            return
        owner = (claim.get("Value") or b"").decode("utf-8", errors="replace")
        if owner == compute.name:
            return
        owner_item = await self._read(self.computes_prefix + owner) if NAME_PATTERN.fullmatch(
            owner) else None
        holder = owner_item and _stored_compute(owner_item)
        if holder and url_identity(holder.connector) == url_identity(compute.connector):
            raise Conflict(_shared_connector(compute, owner))
        await self.consul.kv.delete(claim_key, cas=claim["ModifyIndex"])

    async def _retire_ops(self, compute: Compute) -> list[dict]:
        """Release `compute`'s claim on its connector and retire the connector."""
        retired = {"connector": compute.connector, "compute": compute.name, "since": _now()}
        if compute.token:
            retired["token"] = compute.token
        ops = [_kv("set", self._retired_key(compute.connector), _to_json(retired))]
        claim = await self._read(self._claim_key(compute.connector))
        if claim is not None and claim.get("Value") == compute.name.encode():
            ops.append(_kv("delete-cas", self._claim_key(compute.connector),
                           index=claim["ModifyIndex"]))
        return ops

    def _claim_key(self, connector: str) -> str:
        return f"{self.key_prefix}connectors/{_digest(connector)}"

    def _retired_key(self, connector: str) -> str:
        return f"{self.retired_prefix}{_digest(connector)}"

    async def retired_connectors(self) -> list[RetiredConnector]:
        """Connectors that left the registry and may still run instances."""
        _, items = await self.consul.kv.get(self.retired_prefix, recurse=True)
        retired = []
        for item in items or ():
            value = _from_json(item.get("Value"))
            try:
                connector = validate_url(value.get("connector") if isinstance(value, dict)
                                         else None)
            except ValidationError:
                _warn_once(f"ignoring {item['Key']}: its value is not a retired connector")
                continue
            token = value.get("token")
            retired.append(RetiredConnector(item["Key"], connector, str(value.get("compute")),
                                            item["ModifyIndex"],
                                            token if isinstance(token, str) else None))
        return retired

    async def forget_retired(self, session: str, retired: RetiredConnector) -> bool:
        """Forget a retired connector (the leader saw nothing run there any more)."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        return await self._txn([guard, _kv("delete-cas", retired.key,
                                           index=retired.modify_index)]) is not None

    async def _read(self, key: str) -> dict | None:
        """One key, read from Consul's leader (for decisions that must be current)."""
        _, item = await self.consul.kv.get(key, consistency="consistent")
        return item

    async def _refresh_computes(self) -> None:
        try:
            await self.computes_view.refresh()
        except (ConsulUnavailable, ConsulException) as exc:
            # The write itself succeeded; reads fall back to Consul until the watch resyncs.
            log.warning("could not refresh the compute view after a write: %s", exc)

    async def _services_placed_on(self, compute: str) -> list[tuple[str, int]]:
        _, items = await self.consul.kv.get(self.placements_prefix, recurse=True,
                                            consistency="consistent")
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
                compute = Compute.from_stored(_from_json(entry.value))
            except ValidationError as exc:
                _warn_once(f"ignoring {entry.key}: its value is not a compute definition ({exc})")
                continue
            if compute.name != entry.key[len(self.computes_prefix):]:
                _warn_once(f"ignoring {entry.key}: its value names compute {compute.name!r}")
                continue
            decoded.append((compute, entry.modify_index))
        return decoded

    # -- API tokens: {"name", "role", "salt", "hash", "created"} under tokens/<name> ----
    # Read from the watched view: a token created or revoked through another replica
    # takes effect here within one blocking-query round trip.

    def token_record(self, name: str) -> dict | None:
        """The stored record of token `name`, or None; ConsulUnavailable while the view
        has never been in sync (a token cannot be checked before Consul answered once)."""
        view = self.tokens_view
        if not view.synced and view.index == 0:
            raise ConsulUnavailable(f"cannot check the token: Consul at {self.address} has "
                                    "not answered yet")
        entry = view.entries.get(self.tokens_prefix + name)
        record = _from_json(entry.value) if entry else None
        if record is not None and not valid_record(record, name):
            _warn_once(f"ignoring {entry.key}: its value is not a token record")
            return None
        return record

    async def create_token(self, record: dict) -> None:
        """Store a new token record; Conflict when the name is taken."""
        written = await self._txn([_kv("cas", self.tokens_prefix + record["name"],
                                       _to_json(record), 0)])
        if written is None:
            raise Conflict(f"token {record['name']!r} already exists.")
        self.tokens_view.write_through(written)

    async def list_tokens(self) -> list[dict]:
        """Every token's name, role and creation time (never its hash), by name."""
        _, items = await self.consul.kv.get(self.tokens_prefix, recurse=True)
        records = []
        for item in items or ():
            name = item["Key"][len(self.tokens_prefix):]
            record = _from_json(item.get("Value"))
            if valid_record(record, name):
                records.append({key: record.get(key) for key in ("name", "role", "created")})
        return sorted(records, key=lambda r: r["name"])

    async def delete_token(self, name: str) -> None:
        """Revoke a token; NotFound when there is none of that name."""
        key = self.tokens_prefix + name
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            if item is None:
                raise NotFound(f"token {name!r} does not exist.")
            if await self.consul.kv.delete(key, cas=item["ModifyIndex"]):
                break
        else:
            raise Conflict(f"token {name!r} kept changing; try again.")
        try:  # the revocation holds here at once, not a watch round trip later
            await self.tokens_view.refresh()
        except (ConsulUnavailable, ConsulException) as exc:
            log.warning("could not refresh the token view after a revocation: %s", exc)

    # -- desired state: totals, placements, observed status ---------------------------

    async def read_desired(self, service: str) -> DesiredRecord:
        """A service's total and placement, with the indexes a commit must check."""
        # At once: the shorter the time from read to commit, the fewer lost races.
        (_, total), (_, placement), (_, flags) = await asyncio.gather(*(
            self.consul.kv.get(prefix + service) for prefix in (
                self.resources_key_prefix, self.placements_prefix, self.lifecycle_prefix)))
        flag_values = _from_json(flags and flags.get("Value"))
        return DesiredRecord(
            total=_parse_total(total and total.get("Value")),
            total_index=total["ModifyIndex"] if total else 0,
            placement=_parse_placement(placement and placement.get("Value")),
            placement_index=placement["ModifyIndex"] if placement else 0,
            flags=flag_values if isinstance(flag_values, dict) else {},
            flags_index=flags["ModifyIndex"] if flags else 0)

    async def commit_desired(self, service: str, total: int, placement: dict[str, int],
                             seen: DesiredRecord, compute_indexes: dict[str, int]) -> bool:
        """Write total and placement in one transaction; False when anything changed since
        `seen` was read (either key, or a compute the placement uses)."""
        ops = [_kv("cas", self.resources_key_prefix + service, str(total), seen.total_index),
               _kv("cas", self.placements_prefix + service, _to_json(placement),
                   seen.placement_index)]
        ops += [_kv("check-index", self.computes_prefix + name, index=index)
                for name, index in compute_indexes.items()]
        # A delete marked meanwhile refuses the commit (it re-reads and sees it).
        flags_key = self.lifecycle_prefix + service
        ops.append(_kv("check-index", flags_key, index=seen.flags_index) if seen.flags_index
                   else _kv("check-not-exists", flags_key))
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
        defined = [c for c, _ in self._view_computes()[0]]
        computes = {c.name: c.connector for c in defined}
        resources = self.resources_view.entries
        if services is None:
            names = _valid_names(resources, self.resources_key_prefix)
        else:
            names = [s for s in _valid_names(
                [self.resources_key_prefix + s for s in services], self.resources_key_prefix)
                if self.resources_key_prefix + s in resources]
        totals, placements, indexes, paused, deleting = {}, {}, {}, set(), set()
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
            flags = self._flags(service)
            if flags.get("paused"):
                paused.add(service)
            if flags.get("deleting"):
                deleting.add(service)
        return Desired(computes, totals, placements, frozenset(paused), frozenset(deleting),
                       {c.name: c.spec for c in defined}), indexes

    def _flags(self, service: str) -> dict:
        """The service's lifecycle flags from the view: {"paused": bool, "deleting": time}."""
        entry = self.lifecycle_view.entries.get(self.lifecycle_prefix + service)
        flags = _from_json(entry and entry.value)
        return flags if isinstance(flags, dict) else {}

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
            names = sorted({name for view, prefix in (
                (self.resources_view, self.resources_key_prefix),
                (self.placements_view, self.placements_prefix),
                (self.lifecycle_view, self.lifecycle_prefix))
                for name in _valid_names(view.entries, prefix)}
                | set(_valid_names(statuses, "")))
        else:
            names = [service]
        records = {}
        for name in names:
            total = self.resources_view.entries.get(self.resources_key_prefix + name)
            placement = self.placements_view.entries.get(self.placements_prefix + name)
            flags = self._flags(name)
            if total is None and placement is None and name not in statuses and not flags:
                continue
            observed = statuses.get(name, {})
            records[name] = {
                "desired": _parse_total(total and total.value),
                "placement": _parse_placement(placement and placement.value),
                "observed": observed.get("observed", {}),
                "errors": observed.get("errors", {}),
                "warnings": observed.get("warnings", {}),
                "stepping": observed.get("stepping"),
                "observed_at": observed.get("observed_at"),
                "paused": bool(flags.get("paused")),
                "state": "deleting" if flags.get("deleting") else "active",
            }
        return records

    # -- the service lifecycle: pause, resume, delete, and forgetting -------------------

    async def set_paused(self, service: str, paused: bool) -> bool:
        """Pause or resume `service`; True when that changed its flag. Conflict while it
        is being deleted."""
        key = self.lifecycle_prefix + service
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            flags = _from_json(item and item.get("Value"))
            flags = flags if isinstance(flags, dict) else {}
            if flags.get("deleting"):
                raise Conflict(f"service {service!r} is being deleted.")
            if bool(flags.get("paused")) == paused:
                return False
            written = await self._txn([_kv("cas", key, _to_json({**flags, "paused": paused}),
                                           item["ModifyIndex"] if item else 0)])
            if written is not None:
                self.lifecycle_view.write_through(written)
                return True
        raise ConsulUnavailable(f"could not update {service}: too many concurrent changes")

    async def delete_service(self, service: str) -> bool:
        """Mark `service` deleting: total 0, empty placement and the flag, in one
        transaction (a scale racing with it fails its check-and-set, re-reads, and is
        refused). True when it was marked now, False when it already was."""
        key = self.lifecycle_prefix + service
        for _ in range(MAX_ATTEMPTS):
            seen = await self.read_desired(service)
            if seen.flags.get("deleting"):
                return False
            written = await self._txn([
                _kv("cas", self.resources_key_prefix + service, "0", seen.total_index),
                _kv("cas", self.placements_prefix + service, _to_json({}), seen.placement_index),
                # A delete clears the pause: its scale to 0 must be sent.
                _kv("cas", key, _to_json({"paused": False, "deleting": _now()}),
                    seen.flags_index)])
            if written is not None:
                self.resources_view.write_through(written[:1])
                self.placements_view.write_through(written[1:2])
                self.lifecycle_view.write_through(written[2:])
                return True
        raise ConsulUnavailable(f"could not delete {service}: too many concurrent changes")

    async def forget_service(self, session: str, service: str, total_index: int) -> bool:
        """The leader forgets a deleted service: every key it has, at once, only if its
        total is still the one the leader saw at 0."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        ops = [guard, _kv("delete-cas", self.resources_key_prefix + service, index=total_index)]
        ops += [_kv("delete", prefix + service) for prefix in self._own_prefixes()]
        return await self._txn(ops) is not None

    async def forget_orphans(self, session: str, services: set[str]) -> set[str]:
        """Delete the keys of services whose total another tool removed (only if it is
        still absent); the services forgotten."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        forgotten = set()
        for service in sorted(services):
            ops = [guard, _kv("check-not-exists", self.resources_key_prefix + service)]
            ops += [_kv("delete", prefix + service) for prefix in self._own_prefixes()]
            if await self._txn(ops) is not None:
                forgotten.add(service)
        return forgotten

    def _own_prefixes(self) -> tuple[str, ...]:
        """Where Genisys keeps a service's keys (the total is Skynet's)."""
        return (self.placements_prefix, self.status_prefix, self.events_prefix,
                self.lifecycle_prefix, self.steps_prefix)

    async def known_services(self) -> set[str]:
        """Services with a placement, lifecycle flags, a status or a history (the last two
        read as key names only: no values)."""
        known = {name for view, prefix in ((self.placements_view, self.placements_prefix),
                                           (self.lifecycle_view, self.lifecycle_prefix))
                 for name in _valid_names(view.entries, prefix)}
        for prefix in (self.status_prefix, self.events_prefix):
            _, keys = await self.consul.kv.get(prefix, keys=True, separator="/")
            known.update(_valid_names(keys or (), prefix))
        return known

    # -- order history ------------------------------------------------------------------

    async def events(self, service: str | None = None) -> dict[str, list[dict]]:
        """The order history of `service` (None: of every service), newest first."""
        if service is None:
            _, items = await self.consul.kv.get(self.events_prefix, recurse=True)
        else:
            _, item = await self.consul.kv.get(self.events_prefix + service)
            items = [item] if item else []
        return {item["Key"][len(self.events_prefix):]: events for item in items or ()
                if isinstance(events := _from_json(item.get("Value")), list)}

    def view_troubles(self) -> list[str]:
        """Why reads cannot be served from the local views, one sentence per view."""
        return [str(view.error) if isinstance(view.error, PermissionDenied)
                else f"the local view of {view.prefix} is not in sync with Consul."
                for view in self._views if not view.synced]

    def _check_synced(self) -> None:
        for view in self._views:
            if not view.synced and isinstance(view.error, PermissionDenied):
                raise view.error  # its sentence names the missing permission
        if not all(view.synced for view in self._views):
            raise ConsulUnavailable(f"Consul at {self.address} is not answering: the local "
                                    "view of its state is not in sync")

    async def catalog_services(self, prefix: str) -> list[str]:
        """Services in Consul's catalog whose name starts with `prefix`."""
        _, services = await self.consul.catalog.services()
        return sorted(_valid_names((name for name in services if name.startswith(prefix)), ""))

    async def leader_write(self, session: str, placements: dict[str, tuple[dict, int, int]],
                           statuses: dict[str, dict],
                           events: dict[str, list[dict]] | None = None) -> bool:
        """The leader's writes, each transaction guarded by its hold on the lock.

        placements: service -> (placement, total ModifyIndex, placement ModifyIndex): a
        placement is written only if neither key changed since the leader read them.
        events: service -> its whole order history, written with its status.
        Returns False when a transaction was refused (lock lost, or a key changed).
        """
        groups = []
        compute_indexes = {c.name: index for c, index in self._view_computes()[0]}
        for service, (placement, total_index, placement_index) in placements.items():
            group = [_kv("check-index", self.resources_key_prefix + service, index=total_index),
                     _kv("cas", self.placements_prefix + service, _to_json(placement),
                         placement_index)]
            # As a scale request does: a compute deleted or marked meanwhile refuses it.
            group += [_kv("check-index", self.computes_prefix + c, index=compute_indexes.get(c, 0))
                      for c in placement]
            groups.append(group)
        events = events or {}
        for service in statuses.keys() | events.keys():
            group = []
            if service in statuses:
                group.append(_kv("set", self.status_prefix + service,
                                 _to_json(statuses[service])))
            if service in events:
                group.append(_kv("set", self.events_prefix + service,
                                 _to_json(events[service])))
            groups.append(group)
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        ok = True
        # Consul allows 64 operations and 512 KiB per transaction; a placement's checks,
        # and a status's history, stay with it.
        batch: list[dict] = []
        size = 0
        for group in groups + [None]:
            group_size = group and sum(len(op["KV"].get("Value", "")) for op in group)
            if group is None or len(batch) + len(group) > TXN_OPS - 1 \
                    or size + group_size > TXN_BYTES:
                if batch:
                    ok = await self._txn([guard, *batch]) is not None and ok
                batch, size = [], 0
            if group is not None:
                batch.extend(group)
                size += group_size
        return ok

    async def _txn(self, ops: list[dict]) -> list[Entry] | None:
        """Run a Consul transaction: the entries its set and cas operations wrote, in
        order, or None when it was rolled back."""
        values = [base64.b64decode(op["KV"]["Value"]) for op in ops
                  if op["KV"]["Verb"] in ("set", "cas")]

        def outcome(response):
            if response.code == 409:
                _raise_if_denied(ops, response.body, self.consul.http.key_prefixes)
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

    # -- velocity limits (README "Velocity limits"): a service's own limits are kept with
    # its lifecycle flags, the times of its last steps up and down under steps/<svc>.

    @property
    def steps_prefix(self) -> str:
        return f"{self.key_prefix}steps/"

    def velocity_overrides(self, service: str) -> dict:
        """The service's own velocity limits (keys of genisys.velocity.Limits), from the
        watched lifecycle view."""
        return stored_overrides(self._flags(service).get("velocity"))

    async def set_velocity(self, service: str, overrides: dict | None) -> None:
        """Set the service's own velocity limits (None: remove them); Conflict while it
        is being deleted."""
        key = self.lifecycle_prefix + service
        for _ in range(MAX_ATTEMPTS):
            item = await self._read(key)
            flags = _from_json(item and item.get("Value"))
            flags = flags if isinstance(flags, dict) else {}
            if flags.get("deleting"):
                raise Conflict(f"service {service!r} is being deleted.")
            flags = {k: v for k, v in flags.items() if k != "velocity"}
            if overrides is not None:
                flags["velocity"] = overrides
            written = await self._txn([_kv("cas", key, _to_json(flags),
                                           item["ModifyIndex"] if item else 0)])
            if written is not None:
                self.lifecycle_view.write_through(written)
                return
        raise ConsulUnavailable(f"could not update {service}: too many concurrent changes")

    async def last_steps(self) -> dict[str, Steps]:
        """When each service was last ordered up and down (read when a term starts)."""
        _, items = await self.consul.kv.get(self.steps_prefix, recurse=True,
                                            consistency="consistent")
        return {item["Key"][len(self.steps_prefix):]: Steps.from_dict(_from_json(
                item.get("Value"))) for item in items or ()}

    async def record_steps(self, session: str, steps: dict[str, Steps]) -> bool:
        """Write the services' step times BEFORE their orders go out, guarded by the
        leader's hold on the lock; False when a transaction was refused."""
        guard = {"KV": {"Verb": "check-session", "Key": self.leader_key, "Session": session}}
        ops = [_kv("set", self.steps_prefix + service, _to_json(record.to_dict()))
               for service, record in sorted(steps.items())]
        ok = True
        for start in range(0, len(ops), TXN_OPS - 1):
            ok = await self._txn([guard, *ops[start:start + TXN_OPS - 1]]) is not None and ok
        return ok


def _raise_if_denied(ops: list[dict], body: str, key_prefixes) -> None:
    """A transaction Consul's ACLs refused answers 409 like a failed check-and-set: raise
    PermissionDenied for its first refused operation."""
    denied = _denials(ops, body, key_prefixes)
    if denied:
        raise PermissionDenied(denied[0])


def _denials(ops: list[dict], body: str, key_prefixes) -> list[str]:
    """A transaction's answer says "Permission denied" for each operation the ACLs refuse."""
    try:
        errors = json.loads(body or "{}").get("Errors") or ()
    except (ValueError, AttributeError):
        return []
    denied = []
    for error in errors:
        if not isinstance(error, dict) or "Permission denied" not in str(error.get("What")):
            continue
        at = error.get("OpIndex")
        if isinstance(at, int) and 0 <= at < len(ops):
            op = ops[at]["KV"]
            access = "read" if op["Verb"] in _READ_VERBS else "write"
            denied.append(denied_key(op["Key"], access, key_prefixes))
    return denied


# A certificate of another trust domain: Connect authorizes nothing with it.
_PROBE_CERT_URI = "spiffe://00000000-0000-0000-0000-000000000000.consul/ns/default/dc/dc1/svc/probe"
_READ_VERBS = ("get", "get-tree", "check-index", "check-session", "check-not-exists")

# Consul's limit of operations in one transaction.
TXN_OPS = 64
# Below Consul's 512 KiB limit on a transaction (values travel base64-encoded).
TXN_BYTES = 384 * 1024

# A leader's term key changes only under its own writes: a few attempts are plenty.
TERM_ATTEMPTS = 5


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


def _stored_compute(item: dict) -> Compute | None:
    """The compute stored in a KV item; None when its value is not a definition."""
    try:
        return Compute.from_stored(_from_json(item.get("Value")))
    except ValidationError:
        return None


def _shared_connector(compute: Compute, owner: str) -> str:
    return (f"connector {compute.connector} is already the connector of compute {owner!r}: "
            "two computes on one connector would undo each other's orders.")


def _digest(connector: str) -> str:
    """A key-safe name for a connector; equal for equal url_identity."""
    return hashlib.sha256(url_identity(connector).encode()).hexdigest()[:24]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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


_invalid_keys: set[str] = set()


def _valid_names(keys, prefix: str) -> list[str]:
    """Service names from keys under `prefix` that other tools may have written: those
    that are not valid names (`wéb`, `web/scale?`) are skipped, and reported once each."""
    names = []
    for key in keys:
        name = key[len(prefix):]
        if NAME_PATTERN.fullmatch(name):
            names.append(name)
        elif key not in _invalid_keys:
            _invalid_keys.add(key)
            log.warning("ignoring Consul key %r: %r is not a valid service name (1 to 64 "
                        "letters, digits, '_', '.' or '-')", key[:200], name[:80])
    return names


_warned: dict[str, float] = {}


def _warn_once(message: str, every: float = 300.0) -> None:
    """Log a recurring data problem once every few minutes, not on every read."""
    now = time.monotonic()
    if now - _warned.get(message, -every) >= every:
        _warned[message] = now
        log.warning(message)
