"""Leader election's part of the store: catalog registration, TTL check, session, the
leader lock and the term. Used by genisys/leader.py only; the lock is `leader_key`, held by
a session bound to the replica's TTL check."""

import math
from dataclasses import dataclass

from genisys.protocol import MAX_TERM
from genisys.store.transport import SERVICE_NAME, ConsulError, ConsulUnavailable
from genisys.store.values import _from_json, _kv, _to_json, _warn_once

# A leader's term key changes only under its own writes: a few attempts are plenty.
TERM_ATTEMPTS = 5


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


class Election:
    """ConsulStore's election methods."""

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
        raise ConsulError(f"{self.term_key} kept changing under the leader's writes")

    async def read_term(self) -> int | None:
        """The last leader's term as stored (None before the first leader), for GET /leader."""
        _, item = await self.consul.kv.get(self.term_key)
        term = _from_json(item and item.get("Value"))
        return term if isinstance(term, int) and not isinstance(term, bool) else None

