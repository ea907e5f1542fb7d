"""ConsulStore: the only door to Consul.

Reads of the compute registry, totals, placements, lifecycle flags and tokens are served
from PrefixViews. A replica sees its own writes at once because every write refreshes the
view before returning; `consistent=True` reads bypass the view and ask Consul's leader.
"""

import base64
import json
import logging
from collections.abc import Callable

from genisys.metrics import ReplicaMetrics
from genisys.model import Compute
from genisys.store.desired import DesiredState
from genisys.store.election import Election
from genisys.store.registry import Registry
from genisys.store.tokens import Tokens
from genisys.store.transport import (
    SERVICE_NAME,
    ConsulError,
    ConsulUnavailable,
    PermissionDenied,
    _Consul,
    _denials,
    _raise_if_denied,
)
from genisys.store.values import Entry, _kv, _valid_names
from genisys.store.velocity import VelocityState
from genisys.store.view import PrefixView

log = logging.getLogger(__name__)

# A certificate of another trust domain: Connect authorizes nothing with it.
_PROBE_CERT_URI = "spiffe://00000000-0000-0000-0000-000000000000.consul/ns/default/dc/dc1/svc/probe"


class ConsulStore(Election, Registry, Tokens, DesiredState, VelocityState):
    """Every read and write of Genisys's state in Consul: the views and the transport here,
    one part per job in the modules it inherits from."""

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
                raise ConsulError(f"transaction refused ({response.code}): "
                                      f"{response.body[:200]}")
            results = [r["KV"] for r in json.loads(response.body).get("Results") or ()
                       if r.get("KV") and r["KV"]["Key"] in written_keys]
            return [Entry(r["Key"], value, r["CreateIndex"], r["ModifyIndex"])
                    for r, value in zip(results, values)]

        written_keys = {op["KV"]["Key"] for op in ops if op["KV"]["Verb"] in ("set", "cas")}
        return await self.consul.http.put(outcome, "/v1/txn", data=json.dumps(ops),
                                          headers=self.consul.prepare_headers())

    async def _read(self, key: str) -> dict | None:
        """One key, read from Consul's leader (for decisions that must be current)."""
        _, item = await self.consul.kv.get(key, consistency="consistent")
        return item
