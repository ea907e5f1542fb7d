"""The reconcile engine in-process: a real Consul agent, a ConsulStore, kit connectors on
real ports in the test's event loop, and a Term holding a real leader lock."""

import asyncio
import base64
import json
import time

import pytest
import requests

from genisys.connector import ConnectorClient
from genisys.connectors.kit import Backend, Connector, listen
from genisys.engine.reconciler import PLACEMENT_TXN_OPS, Reconciler, _transactions
from genisys.leader import Term
from genisys.model import Compute, check_fields, validate_name
from genisys.store import ConsulStore

pytestmark = pytest.mark.timeout(60)


class MemoryBackend(Backend):
    """Counts in memory; a scale takes `delay` seconds. Records each call per service."""

    name = "memory"
    auto_define = True

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.counts: dict[str, int] = {}
        self.scales: list[tuple[str, int]] = []
        self.statuses: list[str] = []

    def validate(self, definition):
        check_fields(definition, ("name",))
        return {"name": validate_name(definition["name"])}

    async def scale(self, definition, number):
        self.scales.append((definition["name"], number))
        await asyncio.sleep(self.delay)
        self.counts[definition["name"]] = number

    async def status(self, definition):
        self.statuses.append(definition["name"])
        return self.counts.get(definition["name"], 0)


class HungConnector:
    """Accepts connections and never answers; counts the requests left pending."""

    def __init__(self):
        self.pending = 0
        self.connections = []

    async def start(self) -> str:
        async def answer_never(reader, writer):
            self.pending += 1
            self.connections.append(writer)  # kept open, never written to

        self.server = await asyncio.start_server(answer_never, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        self.server.close()
        for writer in self.connections:
            writer.close()


class RacedStore(ConsulStore):
    """Another writer changes a placement between the leader's read and its write."""

    race = None  # the write to make before the next placement (a function)

    async def leader_write(self, session, placements, statuses, events=None):
        if placements and self.race:
            race, self.race = self.race, None
            race()
        return await super().leader_write(session, placements, statuses, events)


async def until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return value


class Engine:
    """A leading Reconciler over `computes` (name -> Backend, or a URL), run in the test."""

    def __init__(self, consul, prefix, computes, *, timeout=5.0, poll_interval=60.0,
                 store_class=ConsulStore):
        self.consul, self.prefix, self.computes = consul, prefix, computes
        self.timeout, self.poll_interval, self.store_class = timeout, poll_interval, store_class
        self.connectors: dict[str, Connector] = {}

    async def __aenter__(self):
        self.store = self.store_class(self.consul.host, self.consul.port, key_prefix=self.prefix,
                                      resources_key_prefix=f"{self.prefix}resources/",
                                      timeout=2)
        self.store.start()
        self.servers = []
        for name, backend in self.computes.items():
            url = backend
            if isinstance(backend, Backend):
                self.connectors[name] = Connector(backend)
                server, port = listen(self.connectors[name])
                self.servers.append(server)
                url = f"http://127.0.0.1:{port}"
            await self.store.create_compute(Compute(name, url))
        session = requests.put(f"{self.consul.url}/v1/session/create",
                               json={"Name": "test", "Checks": []}, timeout=5).json()["ID"]
        assert await self.store.acquire_leader(session, {"id": "test"})

        async def raise_term(_session, above):
            return above + 1

        self.term = Term(1, session, lambda term: True, raise_term)
        self.client = ConnectorClient(timeout=self.timeout)
        self.reconciler = Reconciler(self.store, self.client, poll_interval=self.poll_interval,
                                     concurrency=8, service_prefix="", strategy="first")
        await until(lambda: not self.store.view_troubles(), what="the views in sync")
        self.leading = asyncio.create_task(self.reconciler.lead(self.term))
        await until(lambda: len(self.reconciler.workers) == len(self.computes),
                    what="a worker per compute")
        return self

    async def __aexit__(self, *exc):
        self.leading.cancel()
        await asyncio.gather(self.leading, return_exceptions=True)
        for server in self.servers:
            server.stop()
        self.client.close()
        await self.store.close()

    async def scale(self, service: str, total: int, placement: dict[str, int]) -> None:
        """As the API does: total and placement in one transaction."""
        seen = await self.store.read_desired(service)
        assert await self.store.commit_desired(service, total, placement, seen, {})

    async def status(self, service: str) -> dict:
        return (await self.store.statuses(service)).get(service, {})

    def metric(self, name: str, **labels) -> float:
        return self.store.metrics.registry.get_sample_value(name, labels) or 0.0


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario(), 50))


def test_a_changed_total_reaches_only_its_service(consul, prefix):
    backend = MemoryBackend()

    async def scenario():
        async with Engine(consul, prefix, {"local": backend}) as engine:
            await engine.scale("web", 1, {"local": 1})
            await engine.scale("api", 1, {"local": 1})
            await until(lambda: backend.counts == {"web": 1, "api": 1}, what="both at 1")
            backend.statuses.clear()
            backend.scales.clear()
            await engine.scale("web", 3, {"local": 3})
            await until(lambda: backend.counts["web"] == 3, what="web at 3")
            await until(lambda: engine.reconciler.recorded("web").get("observed")
                        == {"local": 3}, what="web recorded at 3")
            assert backend.scales == [("web", 3)]
            assert "api" not in backend.statuses  # keyed: api is not looked at
            assert engine.metric("genisys_reconcile_full_cycles_total", reason="start") == 1
            for reason in ("poll", "computes", "retry"):
                assert engine.metric("genisys_reconcile_full_cycles_total", reason=reason) == 0

    run(scenario)


def test_a_hung_compute_does_not_delay_a_healthy_one(consul, prefix):
    healthy, hung = MemoryBackend(), HungConnector()

    async def scenario():
        hung_url = await hung.start()
        async with Engine(consul, prefix, {"hung": hung_url, "healthy": healthy},
                          timeout=30.0) as engine:
            await engine.scale("web", 2, {"healthy": 2})
            await until(lambda: healthy.counts.get("web") == 2 and hung.pending >= 1,
                        what="web at 2 on healthy, the hung compute asked")
            # The order arrived while the hung compute's call waits for its 30 s timeout.
            assert engine.reconciler.workers["hung"].failing_since is None
            await until(lambda: engine.reconciler.recorded("web").get("observed")
                        == {"healthy": 2}, what="web recorded at 2 on healthy")
            assert hung.pending >= 1 and engine.reconciler.workers["hung"].failing_since is None
            # /health's last_cycle: each compute's last full observation, on its own.
            assert engine.reconciler.last_cycle["computes"]["healthy"]["ok"] is True
        hung.close()

    run(scenario)


def test_an_order_that_outlives_the_timeout_shows_in_progress_then_done(consul, prefix):
    backend = MemoryBackend(delay=2.5)

    async def scenario():
        async with Engine(consul, prefix, {"slow": backend}, timeout=1.0) as engine:
            await engine.scale("web", 2, {"slow": 2})
            in_progress = await until(
                lambda: engine.reconciler.recorded("web").get("in_progress"),
                what="the order in progress")
            assert in_progress["slow"]["to"] == 2 and in_progress["slow"]["since"]
            stored = await engine.status("web")
            assert stored["in_progress"] == in_progress and stored["errors"] == {}
            # Done within seconds, not at the next full pass (poll_interval is 60 s).
            await until(lambda: engine.reconciler.recorded("web").get("observed")
                        == {"slow": 2}, timeout=8, what="web observed at 2")
            assert engine.reconciler.recorded("web")["in_progress"] == {}
            assert backend.scales == [("web", 2)]  # never sent again while in progress
            assert engine.metric("genisys_reconcile_requeues_total", reason="in_progress") >= 1
            history = (await engine.store.events("web"))["web"]
            assert [e["result"] for e in history] == ["in_progress"]

    run(scenario)


def test_a_lost_placement_check_and_set_requeues_only_that_service(consul, prefix):
    backend = MemoryBackend()

    async def scenario():
        async with Engine(consul, prefix, {"local": backend},
                          store_class=RacedStore) as engine:
            await engine.scale("other", 1, {"local": 1})
            await until(lambda: backend.counts.get("other") == 1, what="other at 1")
            backend.statuses.clear()
            # Another tool writes two totals alone; another writer changes one placement
            # between the leader's read and its check-and-set.
            engine.store.race = lambda: consul.kv_put(f"{prefix}placements/web", '{"local": 1}')
            requests.put(f"{consul.url}/v1/txn", timeout=5, json=[
                {"KV": {"Verb": "set", "Key": f"{prefix}resources/{service}",
                        "Value": base64.b64encode(b"3").decode()}} for service in ("web", "api")])
            await until(lambda: backend.counts.get("web") == backend.counts.get("api") == 3,
                        what="web and api placed and at 3")
            assert engine.metric("genisys_reconcile_requeues_total", reason="conflict") == 1
            assert engine.metric("genisys_reconcile_full_cycles_total", reason="start") == 1
            assert engine.metric("genisys_reconcile_full_cycles_total", reason="retry") == 0
            assert "other" not in backend.statuses
            assert json.loads(consul.kv_get(f"{prefix}placements/web")) == {"local": 3}

    run(scenario)


def test_a_newer_number_replaces_an_order_in_progress_at_once(consul, prefix):
    """x=3 then x=0 with a backend slower than connector.timeout left 3 instances running
    until the next full poll while the status said observed 0."""
    backend = MemoryBackend(delay=3.0)

    async def scenario():
        async with Engine(consul, prefix, {"slow": backend}, timeout=1.0) as engine:
            await engine.scale("x", 3, {"slow": 3})
            await until(lambda: backend.scales == [("x", 3)], what="the order to 3")
            await engine.scale("x", 0, {})
            await until(lambda: backend.scales == [("x", 3), ("x", 0)],
                        what="the order to 0, once the one to 3 timed out")
            await until(lambda: backend.counts.get("x") == 0, what="x at 0")
            await until(lambda: engine.reconciler.recorded("x").get("observed")
                        == {"slow": 0} and not engine.reconciler.recorded("x")["in_progress"],
                        what="x recorded at 0, nothing in progress")
            assert backend.counts["x"] == 0  # the order to 3 was replaced, never completed

    run(scenario)


def test_placement_fixes_are_grouped_to_fill_one_transaction_each():
    fixes = {f"s{i}": {"a": 1, "b": 1} for i in range(100)}  # 4 operations each
    chunks = list(_transactions(fixes))
    assert [len(chunk) for chunk in chunks[:-1]] == [PLACEMENT_TXN_OPS // 4] * (len(chunks) - 1)
    assert sum(len(chunk) for chunk in chunks) == 100
    assert PLACEMENT_TXN_OPS + 2 == 64  # with the leader's guard and the journal entry
