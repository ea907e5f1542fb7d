"""Leader election on a Consul session lock (DESIGN section 8).

Every replica registers itself in Consul's catalog as service `genisys`, with a TTL check
that it passes about every second, and holds a session bound to that check (and to the
node's serfHealth). It campaigns for the key `{key_prefix}leader`: the replica whose
session holds it is the leader; the others wait on the key with blocking queries and try
again the moment it is free. A term of leadership is an epoch kept in Consul next to the
lock, `{key_prefix}term`: see Term.

Safety: a leader stops leading (cancels its work, before anything else) as soon as it
cannot show that it still holds the lock:
- the key names another session, or none (its session was invalidated), or
- it has had no successful TTL pass, or no fresh read of the key, for half the check's
  TTL. Consul cannot invalidate the session before that TTL has run out since the last
  pass, so a leader cut off from Consul has stepped down by the time anyone else could
  take the lock (Patroni halves its TTL for the same reason).

The election knows nothing of what the leader does: it runs `lead(term)` while leading,
restarts it if it fails, and cancels it the moment leadership ends (client-go's
OnStartedLeading/OnStoppedLeading). `Term.valid()` is the leader's cancellation signal.
"""

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from genisys.store import (
    SERVICE_NAME,
    CheckMissing,
    ConsulStore,
    LeaderLock,
    SessionInvalid,
)

log = logging.getLogger(__name__)

# While following, a blocking query on the key returns at least this often.
FOLLOW_WAIT = 10.0
# After a session is invalidated Consul refuses the freed lock for its lock-delay: how
# often a follower tries again meanwhile.
LOCK_DELAY_RETRY = 0.1
# A failed (or returned) lead() runs again after this pause, while still leading.
LEAD_RESTART_PAUSE = 1.0
# Back-off between failed campaign steps (Consul down): up to this.
MAX_BACKOFF = 1.0
# Each Consul call of the graceful stop gives up after this.
STOP_STEP_TIMEOUT = 3.0


class TwinReplica(Exception):
    """Another live replica uses this replica's id."""


class Term:
    """One term of this replica's leadership, handed to the leader's work.

    `number` fences a deposed leader's orders: a new leader starts at max(stored term,
    LockIndex) + 1, kept in Consul only while it holds the lock, so it is above every
    term before it, even after a Consul reset. It may grow during the term:
    `raise_above(seen)` lifts it past a term a connector has seen (a stray header, a
    reset Consul), again only while this replica holds the lock. `session` is the Consul
    session that holds the lock (for transactions guarded by `check-session`). `valid()`
    turns False the moment this replica may no longer lead; it is a local check, without
    I/O, cheap enough to call before each batch of actions.
    """

    __slots__ = ("number", "session", "_valid", "_raise", "_raising")

    def __init__(self, number: int, session: str, valid: Callable[["Term"], bool],
                 raise_term: Callable[[str, int], Awaitable[int | None]]):
        self.number = number
        self.session = session
        self._valid = valid
        self._raise = raise_term  # (session, above) -> the new term, None when deposed
        self._raising = asyncio.Lock()

    def valid(self) -> bool:
        return self._valid(self)

    async def raise_above(self, seen: int) -> bool:
        """Make `number` exceed `seen`; True when it does and this replica still leads."""
        async with self._raising:  # many orders meet the same connector's term at once
            if self.number <= seen and self.valid():
                raised = await self._raise(self.session, seen)
                if raised is None:
                    return False
                self.number = max(self.number, raised)
            return self.number > seen and self.valid()

    def __repr__(self) -> str:
        return f"Term({self.number}, valid={self.valid()})"


class LeaderElection:
    """Campaign for leadership, lead while holding the lock, follow otherwise."""

    def __init__(self, store: ConsulStore, replica_id: str, address: str, *,
                 lock_delay: float, check_ttl: float,
                 lead: Callable[[Term], Awaitable[None]] | None = None):
        self._store = store
        self.replica_id = replica_id
        self.address = address  # host:port, as other replicas and clients reach this one
        host, _, port = address.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self.lock_delay = max(0.0, lock_delay)
        self.check_ttl = check_ttl
        self._lead = lead
        self.service_id = f"{SERVICE_NAME}-{replica_id}"
        self.check_id = f"{self.service_id}-ttl"
        # A leader must have heard from Consul within this, or step down.
        self.margin = check_ttl / 2
        # Pass the check "about every second", and always several times per margin.
        self._pass_interval = min(1.0, check_ttl / 4)
        # The leader's blocking query on the key returns at least this often: each answer
        # confirms the lock, well within the margin.
        self._hold_wait = check_ttl / 4

        # Set, with the reason, when this replica must not go on (a live twin).
        self.fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._registered = asyncio.Event()
        self._passed = asyncio.Event()  # set on every successful pass of the check
        self._orphans_checked = False
        self._session: str | None = None
        self._stale_sessions: list[str] = []
        self._value: dict | None = None
        self._term: Term | None = None
        self._lead_task: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self._following: tuple | None = None
        self._pass_ok_at = -math.inf   # monotonic time the last successful pass was sent
        self._held_at = -math.inf      # monotonic time the lock was last seen ours
        self._stopping = False
        store.metrics.watch_leader(lambda: self.is_leader)

    # -- the interface ------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        term = self._term
        return term is not None and term.valid()

    @property
    def trouble(self) -> str | None:
        """Why this replica cannot take part in the election now (None: it can), for
        /health; Consul's refusals show in the log and the permission probe."""
        if not self._registered.is_set():
            return f"this replica is not registered in Consul's catalog as {self.service_id}."
        if time.monotonic() >= self._pass_ok_at + self.margin:
            return (f"this replica's TTL check {self.check_id} has not passed in Consul for "
                    f"{self.margin:g}s.")
        return None

    async def start(self) -> None:
        """Start the heartbeat and the campaign; returns at once."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat(), name="leader-heartbeat"),
                       loop.create_task(self._campaign(), name="leader-campaign")]
        log.info("replica %s campaigning for leadership (lock %s, check TTL %gs, "
                 "lock-delay %gs)", self.replica_id, self._store.leader_key, self.check_ttl,
                 self.lock_delay)

    async def stop(self) -> None:
        """Leave gracefully: stop leading, release the lock, THEN destroy the session
        (releasing first spares the successor Consul's lock-delay), deregister."""
        if self._stopping:
            return
        self._stopping = True
        await self._step_down("shutting down", level=logging.INFO)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        sessions = [s for s in (self._session, *self._stale_sessions) if s]
        self._session, self._stale_sessions = None, []
        retired = not sessions or await self._quietly(
            self._retire(sessions), "release the lock and destroy the session")
        # Never registered (a twin refused): the registration is the twin's, keep it.
        deregistered = not self._registered.is_set() or await self._quietly(
            self._store.deregister_replica(self.service_id), "deregister from Consul's catalog")
        if retired and deregistered:
            log.info("left the election: lock released, session destroyed, %s deregistered",
                     self.service_id)
        else:
            log.warning("left the election without cleaning up in Consul: the session and "
                        "check expire by themselves within %gs", self.check_ttl)

    # -- heartbeat: registration and TTL check -----------------------------------------

    async def _heartbeat(self) -> None:
        try:
            await self._refuse_twin()
        except TwinReplica as exc:
            log.error("%s", exc)
            self.fatal.set_result(str(exc))
            return
        failing = False
        while True:
            sent = time.monotonic()
            try:
                if not self._registered.is_set():
                    async with asyncio.timeout(self.margin):
                        await self._store.register_replica(
                            self.service_id, self.check_id, self._host, self._port,
                            self.check_ttl, self.replica_id)
                    log.info("registered in Consul's catalog as %s (service %s, TTL check %s)",
                             self.service_id, SERVICE_NAME, self.check_id)
                    self._registered.set()
                else:
                    async with asyncio.timeout(self.margin):
                        await self._store.pass_check(self.check_id)
                self._pass_ok_at = sent
                self._passed.set()
                if failing:
                    log.info("Consul answers again: the TTL check passes")
                    failing = False
            except asyncio.CancelledError:
                raise
            except CheckMissing:
                log.warning("Consul no longer knows this replica's check (agent restarted "
                            "without its data?): registering again")
                self._registered.clear()
                self._orphans_checked = False
                continue
            except Exception as exc:  # the heartbeat never dies; the leader's margin runs out
                if not failing:
                    log.warning("cannot pass the TTL check in Consul: %s", _describe(exc))
                failing = True
            await asyncio.sleep(max(0.0, self._pass_interval - (time.monotonic() - sent)))

    async def _refuse_twin(self) -> None:
        """Before registering: a check with this replica's id that passes belongs to an
        earlier run killed moments ago (it lapses within the TTL) or to a live twin (it
        keeps passing). Two replicas with one id would take each other's session for a
        dead one's, so a twin is refused."""
        deadline, failing = None, False
        while True:
            try:
                if "passing" not in await self._store.check_statuses(self.check_id):
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Consul down: replicas may start before it
                if not failing:
                    log.warning("cannot look for a replica with id %s yet: %s; retrying",
                                self.replica_id, _describe(exc))
                failing = True
                await asyncio.sleep(MAX_BACKOFF)
                continue
            if deadline is None:  # from the first sight of it: Consul may have been down
                deadline = time.monotonic() + self.check_ttl * 1.5 + 1.0
                log.info("the check of replica id %s passed recently: waiting up to %.1fs "
                         "for it to lapse (an earlier run of this replica that stopped)",
                         self.replica_id, deadline - time.monotonic())
            elif time.monotonic() > deadline:
                raise TwinReplica(
                    f"another replica with id {self.replica_id} is running (its check "
                    f"{self.check_id} keeps passing in Consul): give each replica its own "
                    "leader.id (GENISYS_LEADER_ID), or leave it empty for a unique one")
            await asyncio.sleep(0.2)

    # -- campaign: session, acquire, lead or follow ------------------------------------

    async def _campaign(self) -> None:
        failing, backoff = False, 0.1
        while not self._stopping:
            try:
                await self._registered.wait()
                if not self._orphans_checked:
                    await self._adopt_orphans()
                if self._stale_sessions:
                    await self._retire(self._stale_sessions)
                    self._stale_sessions = []
                # Campaign only with a fresh heartbeat: a lock won without one would be
                # given up at once (Consul just came back, the check has not passed yet).
                while time.monotonic() >= self._pass_ok_at + self.margin:
                    self._passed.clear()
                    await self._passed.wait()
                if self._session is None:
                    self._session = await self._store.create_session(
                        f"genisys leader election: {self.replica_id}", self.check_id,
                        self.lock_delay)
                self._value = {"id": self.replica_id, "address": self.address,
                               "since": datetime.now(UTC).isoformat(timespec="seconds")}
                sent = time.monotonic()
                if await self._store.acquire_leader(self._session, self._value):
                    index, lock = await self._store.read_leader()
                    if lock is not None and lock.session == self._session:
                        failing, backoff = False, 0.1
                        await self._lead_term(lock, index, sent)
                        continue
                await self._follow()
                failing, backoff = False, 0.1
            except asyncio.CancelledError:
                raise
            except SessionInvalid:
                log.info("Consul no longer knows session %s: creating a new one", self._session)
                self._session = None
            except Exception as exc:  # Consul down or refusing: campaign again, never give up
                if not failing:
                    log.warning("cannot campaign for leadership: %s; retrying", _describe(exc))
                failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _follow(self) -> None:
        """Wait until the lock looks free (returns at once when it already is)."""
        index, first = 0, True
        while True:
            new_index, lock = await self._store.read_leader(index, FOLLOW_WAIT)
            # Consul's index can go backwards (a restore, a new cluster): read afresh then.
            index = new_index if new_index >= index else 0
            if lock is None or not lock.session:
                if first:  # it was free, yet refused: Consul's lock-delay after an invalidation
                    await asyncio.sleep(LOCK_DELAY_RETRY)
                return
            if lock.session == self._session:
                return  # ours already (an acquire whose answer was lost): acquire again
            holder = (lock.value.get("id"), lock.lock_index)
            if holder != self._following:
                self._following = holder
                log.info("following replica %s (lock index %d)", holder[0], holder[1])
            first = False

    async def _lead_term(self, lock: LeaderLock, index: int, sent: float) -> None:
        number = await self._store.raise_term(lock.session, lock.lock_index)
        if number is None:
            return  # the lock was lost meanwhile: campaign again
        self._held_at = sent
        term = Term(number, lock.session, self._term_is_valid, self._store.raise_term)
        self._term, self._following = term, None
        log.info("I am the leader (term %d)", term.number)
        if self._lead is not None:
            self._lead_task = asyncio.get_running_loop().create_task(
                self._run_lead(term), name=f"lead-term-{term.number}")
        reason = "shutting down"
        try:
            reason = await self._hold(term, index)
        finally:
            await self._step_down(reason)
        # Never trust that session again: release (if it still holds the lock) and destroy
        # it once Consul answers, and campaign with a new one.
        if self._session:
            self._stale_sessions.append(self._session)
            self._session = None

    async def _hold(self, term: Term, index: int) -> str:
        """Lead until the lock is lost or cannot be confirmed; returns why it ended."""
        watch: asyncio.Future | None = None
        failing = False
        try:
            while self._term is term:
                remaining = self._valid_until() - time.monotonic()
                if remaining <= 0:
                    return (f"no word from Consul for {self.margin:g}s (half the check TTL), "
                            "so the session may be about to expire")
                if watch is None:
                    watch = asyncio.ensure_future(self._store.read_leader(index, self._hold_wait))
                done, _ = await asyncio.wait({watch}, timeout=remaining)
                if not done:
                    continue  # the deadline may have moved; look again
                finished, watch = watch, None
                try:
                    new_index, lock = finished.result()
                except Exception as exc:
                    if not failing:
                        log.warning("cannot read the leader key (%s); leading on for at most "
                                    "%.1fs", _describe(exc), max(0.0, remaining))
                    failing, index = True, 0
                    await asyncio.sleep(min(0.1, remaining))
                    continue
                if failing:
                    log.info("the leader key is readable again")
                    failing = False
                if lock is None:
                    return "the leader key was deleted"
                if lock.session != term.session:
                    if not lock.session:
                        return "session invalidated"
                    return f"the lock is held by replica {lock.value.get('id')}"
                # An answer reflects the key as Consul had it when it answered.
                self._held_at = time.monotonic()
                index = new_index if new_index >= index else 0
            return "shutting down"
        finally:
            if watch is not None:
                watch.cancel()

    async def _step_down(self, reason: str, level: int = logging.WARNING) -> None:
        """Stop leading: first of all, cancel the leader's work and wait for it to end."""
        term, self._term = self._term, None
        if term is None:
            return
        if level >= logging.WARNING:
            log.log(level, "lost leadership: %s (term %d)", reason, term.number)
        else:
            log.log(level, "stopped leading: %s (term %d)", reason, term.number)
        task, self._lead_task = self._lead_task, None
        if task is not None:
            task.cancel()
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=5.0)
                if not done:
                    log.warning("the leader's work of term %d has not ended 5s after it was "
                                "cancelled; cancelling it again", term.number)
                    task.cancel()

    async def _run_lead(self, term: Term) -> None:
        """Run lead(term) while this term lasts; the leader's work never dies silently."""
        while self._term is term:
            try:
                await self._lead(term)
                log.warning("the leader's work returned while leading (term %d); running it "
                            "again in %gs", term.number, LEAD_RESTART_PAUSE)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the leader's work failed (term %d); running it again in %gs",
                              term.number, LEAD_RESTART_PAUSE)
            await asyncio.sleep(LEAD_RESTART_PAUSE)

    # -- validity --------------------------------------------------------------------------

    def _valid_until(self) -> float:
        return min(self._pass_ok_at, self._held_at) + self.margin

    def _term_is_valid(self, term: Term) -> bool:
        return self._term is term and time.monotonic() < self._valid_until()

    # -- sessions ----------------------------------------------------------------------------

    async def _adopt_orphans(self) -> None:
        """Sessions bound to this replica's check but not ours belong to an earlier life of
        this replica (same id, killed, restarted): the check passes again now, so Consul
        would keep them, and any lock they hold, forever. Retire them."""
        orphans = [s for s in await self._store.sessions_bound_to(self.check_id)
                   if s != self._session and s not in self._stale_sessions]
        if orphans:
            log.info("retiring %d session(s) left by an earlier run of replica %s",
                     len(orphans), self.replica_id)
            self._stale_sessions.extend(orphans)
        self._orphans_checked = True

    async def _retire(self, sessions: list[str]) -> None:
        """Release the lock if one of `sessions` holds it, THEN destroy them."""
        _, lock = await self._store.read_leader()
        if lock is not None and lock.session in sessions:
            if await self._store.release_leader(lock.session, lock.value):
                log.info("released the leader lock (lock index %d)", lock.lock_index)
        for session in sessions:
            await self._store.destroy_session(session)

    async def _quietly(self, coroutine, what: str) -> bool:
        try:
            async with asyncio.timeout(STOP_STEP_TIMEOUT):
                await coroutine
            return True
        except Exception as exc:
            log.warning("could not %s: %s", what, _describe(exc))
            return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "Consul did not answer in time"
    return str(exc) or type(exc).__name__
