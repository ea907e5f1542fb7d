"""LeaderElection in-process against a real Consul agent: the interface the leader's
work (the reconciler) relies on, and GET /leader when nobody leads."""

import asyncio
import logging
import time

import requests
from tornado.httpserver import HTTPServer

from genisys import config as config_module
from genisys.api import Context, make_app
from genisys.devconsul import free_port
from genisys.leader import LeaderElection, Term
from genisys.store import ConsulStore


def store_for(consul, prefix) -> ConsulStore:
    return ConsulStore(consul.host, consul.port, key_prefix=prefix,
                       resources_key_prefix=f"{prefix}resources/", timeout=2)


def election(store, name, lead=None, check_ttl=2.0) -> LeaderElection:
    return LeaderElection(store, f"{name}-{store.key_prefix[:-1]}", f"127.0.0.1:{free_port()}",
                          lock_delay=1.0, check_ttl=check_ttl, lead=lead)


async def until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def test_lead_runs_with_the_term_and_is_cancelled_on_stop(consul, prefix):
    events = []

    async def lead(term: Term):
        events.append(("started", term.number, term.valid()))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append(("cancelled", term.valid()))
            raise

    async def scenario():
        store = store_for(consul, prefix)
        candidate = election(store, "solo", lead)
        assert not candidate.is_leader
        await candidate.start()
        await until(lambda: candidate.is_leader, what="leadership")
        await until(lambda: events, what="lead() to start")
        _, lock = await store.read_leader()
        # The term is the epoch kept next to the lock, above the lock's LockIndex.
        assert events == [("started", int(consul.kv_get(f"{prefix}term")), True)]
        assert events[0][1] > lock.lock_index
        assert lock.value["id"] == candidate.replica_id
        await candidate.stop()
        assert not candidate.is_leader
        assert events[-1] == ("cancelled", False)
        _, lock = await store.read_leader()
        assert lock.session is None  # released
        assert await store.sessions_bound_to(candidate.check_id) == []
        store.consul.http.close()

    asyncio.run(scenario())


def test_lead_that_fails_is_logged_and_run_again_while_leading(consul, prefix, caplog):
    runs = []

    async def lead(term: Term):
        runs.append(term.number)
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")
        await asyncio.Event().wait()

    async def scenario():
        store = store_for(consul, prefix)
        candidate = election(store, "flaky", lead)
        await candidate.start()
        await until(lambda: len(runs) >= 3, timeout=10, what="lead() to be run three times")
        assert candidate.is_leader and len(set(runs)) == 1
        await candidate.stop()
        store.consul.http.close()

    with caplog.at_level(logging.INFO, logger="genisys.leader"):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if "the leader's work failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
    assert "boom 1" in caplog.text and "boom 2" in caplog.text


def test_an_invalidated_session_stops_the_leader_at_once(consul, prefix, caplog):
    terms: list[Term] = []
    cancelled = []

    async def lead(term: Term):
        terms.append(term)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(term.number)
            raise

    async def scenario():
        stores = [store_for(consul, prefix) for _ in range(2)]
        first = election(stores[0], "a", lead)
        await first.start()
        await until(lambda: first.is_leader and terms, what="a to lead")
        second = election(stores[1], "b", lead)
        await second.start()
        await until(lambda: second._session is not None, what="b's session")
        old = terms[0]
        # An operator (or Consul) invalidates the leader's session.
        requests.put(f"{consul.url}/v1/session/destroy/{old.session}", timeout=5)
        await until(lambda: not old.valid(), timeout=2, what="the old term to end")
        assert cancelled == [old.number]
        await until(lambda: len(terms) == 2, timeout=10, what="a new term")
        assert terms[1].number > old.number and terms[1].valid()
        assert first.is_leader != second.is_leader
        for candidate in (first, second):
            await candidate.stop()
        for store in stores:
            store.consul.http.close()

    with caplog.at_level(logging.INFO, logger="genisys.leader"):
        asyncio.run(scenario())
    assert "lost leadership: session invalidated" in caplog.text


def test_get_leader_is_503_when_nobody_leads(consul, prefix):
    async def scenario():
        config = config_module.build({"consul": {"host": consul.host, "port": consul.port,
                                                 "key_prefix": prefix}})
        store = store_for(consul, prefix)
        port = free_port()
        server = HTTPServer(make_app(Context(config=config, store=store, replica_id="x")))
        server.listen(port, "127.0.0.1")
        loop = asyncio.get_running_loop()
        get = lambda: requests.get(f"http://127.0.0.1:{port}/leader", timeout=5)  # noqa: E731
        response = await loop.run_in_executor(None, get)
        assert response.status_code == 503
        assert response.json() == {"error": "no leader is elected."}
        # A released lock (a value, no session) is no leader either.
        consul.kv_put(f"{prefix}leader", '{"id": "gone", "address": "h:1", "since": "x"}')
        assert (await loop.run_in_executor(None, get)).status_code == 503
        server.stop()
        store.consul.http.close()

    asyncio.run(scenario())
