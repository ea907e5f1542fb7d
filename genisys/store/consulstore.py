"""ConsulStore: the only door to Consul.

Reads of the compute registry, totals, placements and lifecycle flags are served from the
Mirror (genisys/store/mirror.py), tokens from a PrefixView. A replica sees its own writes
at once: every transaction it commits is applied to them before the write returns.
`consistent=True` reads bypass them and ask Consul's leader.
"""

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable

from genisys.metrics import ReplicaMetrics
from genisys.store.desired import DesiredState
from genisys.store.election import Election
from genisys.store.failover import FailoverRecords
from genisys.store.journal import BATCH
from genisys.store.registry import Registry
from genisys.store.tokens import Tokens
from genisys.store.transport import (
    SERVICE_NAME,
    ConsulUnavailable,
    PermissionDenied,
    _Consul,
    _denials,
    transact,
)
from genisys.store.mirror import Mirror
from genisys.store.sync import SyncState
from genisys.store.values import Entry, _kv, _valid_names
from genisys.store.velocity import VelocityState
from genisys.store.view import PrefixView

log = logging.getLogger(__name__)

# How long the leader keeps a change journal entry after it first saw it. A replica that
# heard nothing from the journal for half of it reads everything again.
JOURNAL_GRACE = 30.0

# A certificate of another trust domain: Connect authorizes nothing with it.
_PROBE_CERT_URI = "spiffe://00000000-0000-0000-0000-000000000000.consul/ns/default/dc/dc1/svc/probe"


class ConsulStore(Election, Registry, Tokens, DesiredState, FailoverRecords,
                  VelocityState):
    """Every read and write of Genisys's state in Consul: the mirror, the subscriptions and
    the transactions here, one part per job in the modules it inherits from."""

    def __init__(self, host: str, port: int, *, scheme: str = "http", token: str = "",
                 key_prefix: str = "genisys/", resources_key_prefix: str = "skynet/resources/",
                 timeout: float = 5.0, verify: bool | str = True,
                 cert: tuple[str, str] | None = None, metrics: ReplicaMetrics | None = None,
                 journal_grace: float = JOURNAL_GRACE, watch_pause: float = 1.0):
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
        # Whoever reacts to changes (the leader, while it leads): see subscribe().
        self._listeners: list[tuple[Callable[[set[str]], None], Callable[[], None]]] = []
        self.mirror = Mirror(self.consul, key_prefix=key_prefix,
                             resources_prefix=resources_key_prefix, grace=journal_grace,
                             watch_pause=watch_pause,
                             on_services=self._services_changed,
                             on_computes=self._computes_changed)
        # Statuses and events are not watched: the leader rewrites them after its orders,
        # and every replica re-reading them would cost as much as the changes that matter.
        self.tokens_prefix = f"{key_prefix}tokens/"
        self.tokens_view = PrefixView(self.consul, self.tokens_prefix)
        # The replica's metrics travel with its store, which every part of it holds.
        self.metrics = metrics or ReplicaMetrics()
        self.consul.http.metrics = self.metrics
        for name, state in zip(("desired", "journal", "resources", "computes", "tokens"),
                               self._parts()):
            self.metrics.watch_view(name, lambda state=state: state.out_of_sync_since)

    def _parts(self) -> tuple[SyncState, ...]:
        """What must be in sync with Consul for reads to be served from memory."""
        return (*self.mirror.parts, self.tokens_view.state)

    def reread(self, services: set[str]) -> None:
        """Read these services' desired state again from Consul, in the background (after
        a check-and-set lost to a writer that left no journal entry)."""
        self.mirror.reread(services)

    def subscribe(self, on_services: Callable[[set[str]], None],
                  on_computes: Callable[[set[str]], None]) -> Callable[[], None]:
        """Call on_services(names) when the desired state (total, placement or flags) of
        those services changed, on_computes(names) when those computes changed; returns
        the function that unsubscribes. Called on the event loop, without I/O: a listener
        only notes what changed. While someone listens (the leader), this replica also
        trims the change journal."""
        listener = (on_services, on_computes)
        self._listeners.append(listener)
        self.mirror.journal.trimming = True

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
            self.mirror.journal.trimming = bool(self._listeners)
        return unsubscribe

    def _services_changed(self, names: set[str]) -> None:
        for on_services, _ in list(self._listeners):
            on_services(names)

    def _computes_changed(self, names: set[str]) -> None:
        for _, on_computes in list(self._listeners):
            on_computes(names)

    @classmethod
    def from_config(cls, section) -> "ConsulStore":
        return cls(section.host, section.port, scheme=section.scheme, token=section.token,
                   key_prefix=section.key_prefix,
                   resources_key_prefix=section.resources_key_prefix, timeout=section.timeout,
                   verify=(section.ca_file or True) if section.verify else False,
                   cert=(section.cert_file, section.key_file) if section.cert_file else None)

    def start(self) -> None:
        self.mirror.start()
        self.tokens_view.start()

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until reads can be served from memory, for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not all(part.synced for part in self._parts()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        await self.mirror.stop()
        await self.tokens_view.stop()
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
        """Why reads cannot be served from memory, one sentence per part out of sync."""
        return [str(part.error) if isinstance(part.error, PermissionDenied)
                else part.trouble() for part in self._parts() if not part.synced]

    def _check_synced(self) -> None:
        for part in self._parts():
            if not part.synced and isinstance(part.error, PermissionDenied):
                raise part.error  # its sentence names the missing permission
        if not all(part.synced for part in self._parts()):
            raise ConsulUnavailable(f"Consul at {self.address} is not answering: the local "
                                    "copy of its state is not in sync")

    async def catalog_services(self, prefix: str) -> list[str]:
        """Services in Consul's catalog whose name starts with `prefix`."""
        _, services = await self.consul.catalog.services()
        return sorted(_valid_names((name for name in services if name.startswith(prefix)), ""))

    def _journal_op(self, kind: str, name: str) -> dict:
        """The change journal entry every write of a service's desired state or of a
        compute sets in its transaction (genisys/store/journal.py). Its value is new each
        time: Consul leaves the ModifyIndex of a key set to the value it has unchanged."""
        return _kv("set", self.mirror.journal_key(kind, name), secrets.token_hex(6))

    def _journal_batch_op(self, services: list[str]) -> dict:
        """One journal entry naming every service a transaction places (a new key each
        time, so that writers never contend on it)."""
        return _kv("set", self.mirror.journal_key(BATCH, secrets.token_hex(8)),
                   json.dumps(services, separators=(",", ":")))

    async def _txn(self, ops: list[dict]) -> dict[str, Entry] | None:
        """Run a Consul transaction and show its writes here at once (read-your-writes):
        the entries its set and cas operations wrote, by key, or None when it was rolled
        back."""
        journal = self.mirror.journal
        entries = journal.writing(ops)
        written = None
        try:
            outcome = await transact(self.consul, ops)
            if outcome is None:
                return None
            written, deleted = outcome
            self.mirror.apply(written, deleted)
        finally:
            journal.written(entries, written or {})
        self.tokens_view.write_through([entry for key, entry in written.items()
                                        if key.startswith(self.tokens_prefix)])
        return written

    async def _read(self, key: str) -> dict | None:
        """One key, read from Consul's leader (for decisions that must be current)."""
        _, item = await self.consul.kv.get(key, consistency="consistent")
        return item
