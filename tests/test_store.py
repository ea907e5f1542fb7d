"""The store's propagation (README "Consistency and propagation"), in process against a
real Consul: two ConsulStores on one key prefix are two replicas, each on its own event
loop in its own thread, so that one can be paused as a long GC or VM pause would."""

import asyncio
import logging
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from genisys.api.services import known_record
from genisys.devconsul import DevConsul
from genisys.model import Compute
from genisys.scaling import preview, scale
from genisys.store import ConsulStore
from genisys.store.journal import SERVICES
from genisys.store.mirror import Mirror, _newer
from genisys.store.tables import ComputeTable, DesiredRecord, StoredCompute, later
from tests.support import wait_until


class ThreadedStore:
    """A ConsulStore on an event loop of its own, in a thread."""

    def __init__(self, address: str, prefix: str, **settings):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        host, port = address.rsplit(":", 1)

        async def started():
            store = ConsulStore(host, int(port), key_prefix=prefix,
                                resources_key_prefix=f"{prefix}resources/", **settings)
            store.start()
            await store.wait_synced(10)
            return store
        self.store = self.run(started())
        self.reported: list = []  # what subscribe() said, in order

    def run(self, coroutine, timeout: float = 15):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    call = run  # from another replica's loop: blocks that loop meanwhile

    def read(self, function):
        """`function()` on the store's loop (where the store changes)."""
        async def call():
            return function()
        return self.run(call())

    def subscribe(self) -> None:
        self.read(lambda: self.store.subscribe(
            self.reported.append, lambda names: self.reported.append(("computes", names))))

    def totals(self) -> dict[str, int]:
        return self.read(lambda: self.store.desired_snapshot()[0].totals)

    def record(self, service: str):
        return self.read(lambda: self.store.mirror.services.get(service))

    def pause(self, seconds: float) -> None:
        """Block the loop: nothing of this replica runs meanwhile."""
        self.loop.call_soon_threadsafe(time.sleep, seconds)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def replicas(consul, prefix):
    started = []

    def start(address: str = consul.address, **settings) -> ThreadedStore:
        started.append(ThreadedStore(address, prefix, **settings))
        return started[-1]
    yield start
    for replica in started:
        replica.close()


@pytest.fixture
def own_consul():
    """An agent of this test's own, for a test that rolls Consul's state back."""
    agent = DevConsul().start()
    yield agent
    agent.stop()


def define_and_scale(replica: ThreadedStore, services: dict[str, int]) -> None:
    replica.run(replica.store.create_compute(Compute("one", "http://127.0.0.1:9")))
    for service, number in services.items():
        replica.run(scale(replica.store, service, number, None, "first"))


def test_a_scale_shows_at_once_on_its_replica_and_soon_on_the_other(replicas):
    writer, other = replicas(), replicas()
    define_and_scale(writer, {"db": 1})
    wait_until(lambda: other.totals() == {"db": 1}, what="db on the other replica")
    other.subscribe()
    writer.run(scale(writer.store, "web", 3, None, "first"))
    assert writer.totals() == {"db": 1, "web": 3}  # read-your-writes: no round trip
    wait_until(lambda: other.totals() == {"db": 1, "web": 3}, what="web on the other replica")
    assert other.record("web").placement == {"one": 3}
    assert other.reported == [{"web"}]


def test_a_total_another_tool_writes_is_picked_up(replicas, consul, prefix):
    writer, other = replicas(), replicas()
    define_and_scale(writer, {"db": 1})
    wait_until(lambda: other.totals() == {"db": 1}, what="db on the other replica")
    other.subscribe()
    consul.kv_put(f"{prefix}resources/batch", "7")  # no journal entry: Skynet's own tool
    wait_until(lambda: other.totals().get("batch") == 7, what="the other tool's total")
    assert other.reported == [{"batch"}]
    assert requests.delete(f"{consul.url}/v1/kv/{prefix}resources/batch", timeout=5).ok
    wait_until(lambda: "batch" not in other.totals(), what="the total removed")


def test_a_compute_another_tool_writes_is_picked_up(replicas, consul, prefix):
    replica = replicas()
    replica.subscribe()
    consul.kv_put(f"{prefix}computes/two", '{"name": "two", "connector": "http://h:2"}')
    wait_until(lambda: replica.run(replica.store.get_compute("two")), what="compute two")
    assert replica.reported == [("computes", {"two"})]


def test_a_scale_naming_a_compute_this_replica_has_not_seen_yet_reads_consul(
        replicas, consul, prefix):
    replica = replicas()

    async def create_elsewhere_then_scale():
        # Blocking here keeps the watch from installing the compute before the scale.
        consul.kv_put(f"{prefix}computes/two", '{"name": "two", "connector": "http://h:2"}')
        return await scale(replica.store, "web", 1, "two", "first")
    assert replica.run(create_elsewhere_then_scale()) == {"two": 1}


def test_a_scale_planned_from_a_lagging_view_is_refused_by_consul_and_planned_again(
        replicas, consul, prefix):
    """The first attempt plans from the view (no read from Consul); the commit's
    check-and-set refuses a plan made from what the view had not heard of yet."""
    writer, other = replicas(), replicas()
    define_and_scale(writer, {"web": 2})
    wait_until(lambda: other.totals() == {"web": 2}, what="web on the other replica")

    async def scale_elsewhere_then_here():
        # Blocking this loop keeps its mirror from hearing of the first scale.
        writer.call(scale(writer.store, "web", 5, None, "first"))
        seen = other.store.known_desired("web")
        return seen.total, await scale(other.store, "web", 6, None, "first")
    assert other.run(scale_elsewhere_then_here()) == (2, {"one": 6})
    assert consul.kv_get(f"{prefix}resources/web") == b"6"


def test_a_dry_runs_index_is_checked_against_consul_not_a_lagging_view(replicas):
    writer, other = replicas(), replicas()
    define_and_scale(writer, {"web": 2})
    wait_until(lambda: other.totals() == {"web": 2}, what="web on the other replica")

    async def dry_run_elsewhere_then_scale_here_at_its_index():
        # Blocking this loop keeps its mirror from hearing of the scale.
        writer.call(scale(writer.store, "web", 5, None, "first"))
        index = writer.call(preview(writer.store, "web", 7, None, "first")).seen.index
        lagging = other.store.known_desired("web").index
        return lagging < index, await scale(other.store, "web", 7, None, "first",
                                            if_index=index)
    assert other.run(dry_run_elsewhere_then_scale_here_at_its_index()) == (True, {"one": 7})


def test_a_service_this_replica_has_not_seen_yet_is_known_to_its_api(replicas, consul,
                                                                       prefix):
    replica = replicas()

    async def scale_elsewhere_then_look_it_up():
        # Blocking here keeps the mirror from reading the total before the look-up.
        consul.kv_put(f"{prefix}resources/batch", "4")
        return await known_record(SimpleNamespace(store=replica.store), "batch")
    assert replica.run(scale_elsewhere_then_look_it_up())["desired"] == 4


def test_the_leader_trims_the_journal_after_the_grace_period(replicas, consul, prefix):
    leader, follower = replicas(journal_grace=1.0), replicas(journal_grace=1.0)
    define_and_scale(follower, {"web": 2})
    assert sorted(consul.kv_keys(f"{prefix}changes/")) == [
        f"{prefix}changes/computes/one", f"{prefix}changes/services/web"]
    leader.subscribe()  # the leader subscribes while it leads
    wait_until(lambda: consul.kv_keys(f"{prefix}changes/") == [], what="the journal trimmed")
    assert leader.totals() == follower.totals() == {"web": 2}


def test_a_replica_paused_longer_than_half_the_grace_reads_everything_again(
        replicas, consul, prefix, caplog):
    leader, paused = replicas(journal_grace=1.0), replicas(journal_grace=1.0)
    leader.subscribe()
    define_and_scale(leader, {"web": 2})
    wait_until(lambda: paused.totals() == {"web": 2}, what="web on the other replica")
    wait_until(lambda: consul.kv_keys(f"{prefix}changes/") == [], what="the journal trimmed")
    caplog.set_level(logging.INFO, logger="genisys.store")
    paused.pause(4.0)
    # A pause changes only the flags: no watch but the journal's would tell.
    assert leader.run(leader.store.set_paused("web", True))
    wait_until(lambda: consul.kv_keys(f"{prefix}changes/") == [], timeout=3.5,
               what="the pause's journal entry trimmed while the replica is paused")
    wait_until(lambda: paused.record("web").flags.get("paused"), what="the pause seen")
    assert "more than half the journal's grace" in caplog.text


def test_consul_indexes_going_backwards_make_a_replica_read_everything_again(
        replicas, own_consul, prefix, caplog):
    writer, other = replicas(own_consul.address), replicas(own_consul.address)
    define_and_scale(writer, {"web": 1})
    wait_until(lambda: other.totals() == {"web": 1}, what="web on the other replica")
    snapshot = requests.get(f"http://{own_consul.address}/v1/snapshot", timeout=10)
    snapshot.raise_for_status()
    writer.run(writer.store.set_paused("web", True))
    wait_until(lambda: other.record("web").flags.get("paused"), what="the pause seen")
    caplog.set_level(logging.INFO, logger="genisys.store")
    requests.put(f"http://{own_consul.address}/v1/snapshot", data=snapshot.content,
                 timeout=10).raise_for_status()
    wait_until(lambda: not other.record("web").flags.get("paused"), what="the restored state")
    assert "index went backwards" in caplog.text


def test_a_total_and_its_placement_are_never_seen_apart(replicas):
    writer, reader = replicas(), replicas()
    define_and_scale(writer, {"web": 1})
    wait_until(lambda: reader.totals() == {"web": 1}, what="web on the other replica")
    mixed, seen = [], []

    def check(names):  # on the reader's loop, right after each change is installed
        desired, _ = reader.store.desired_snapshot({"web"})
        total, placement = desired.totals["web"], desired.placements["web"]
        seen.append(total)
        if sum(placement.values()) != total:
            mixed.append((total, placement))
    reader.read(lambda: reader.store.subscribe(check, lambda names: None))
    for number in range(2, 102):
        writer.run(scale(writer.store, "web", number, None, "first"))
    wait_until(lambda: reader.totals() == {"web": 101}, what="the last scale")
    assert mixed == []
    assert seen and seen == sorted(seen)  # and never an older record after a newer one


def test_a_resync_reads_again_only_what_the_journal_names_after_the_resync_read_it(
        replicas, consul, prefix):
    writer, reader = replicas(), replicas()
    define_and_scale(writer, {"db": 1})
    wait_until(lambda: reader.totals() == {"db": 1}, what="db on the reader")
    mirror = reader.store.mirror
    db_entry, later_entry = (mirror.journal_key(SERVICES, name) for name in ("db", "later"))
    db_index = requests.get(f"{consul.url}/v1/kv/{db_entry}", timeout=5).json()[0]["ModifyIndex"]

    async def resync_while_the_journal_names(entries):
        mirror._task.cancel()  # only this test reads now
        mirror._pending_services = {"db"}  # pending before the resync: it reads db too
        mirror._resync_reason = "a test"
        resync = asyncio.ensure_future(mirror._resync())
        await asyncio.sleep(0)  # the resync has begun
        mirror._journaled(entries)
        await resync
        return mirror._pending_services
    # db's entry predates the resync's read of the journal; "later" is written after it.
    assert reader.run(resync_while_the_journal_names(
        {db_entry: db_index, later_entry: 10 ** 12})) == {"later"}


def test_the_compute_table_keeps_its_order_and_owners_as_it_changes():
    table = ComputeTable()

    def stored(name, connector, modify, create):
        return StoredCompute(Compute(name, connector), modify, create)
    table.put("b", stored("b", "http://h:2", 5, 5))
    table.put("a", stored("a", "http://h:1", 7, 7))
    assert [c.name for c, _ in table.ordered()] == ["b", "a"]
    assert not table.put("a", stored("a", "http://h:1", 7, 7))  # unchanged
    table.put("b", stored("b", "http://H:2/", 9, 5))  # the same connector, another spelling
    assert table.owners("http://h:2") == {"b"} and table.ordered()[0][1] == 9
    table.put("b", None)
    assert table.owners("http://h:2") == set() and list(table.connectors()) == ["a"]
    taken, taken_order = table.connectors(), table.ordered()
    table.put("c", stored("c", "http://h:3", 11, 11))  # a new one goes last
    table.put("d", stored("d", "http://h:4", 10, 10))  # created before c: goes before it
    assert list(table.connectors()) == ["a", "d", "c"]
    assert [c.name for c, _ in table.ordered()] == ["a", "d", "c"] and list(table.specs()) == [
        "a", "d", "c"]
    # What a reader took does not change under it, nor what it takes once changes stop.
    assert list(taken) == ["a"] and [c.name for c, _ in taken_order] == ["a"]
    taken = table.specs()
    table.put("d", None)
    assert list(taken) == ["a", "d", "c"] and list(table.specs()) == ["a", "c"]


def test_changes_are_found_by_modify_index_alone():
    indexes = {"p/a": 3, "p/b": 9, "p/new": 12, "p/bad name": 4}
    ours = {"a": 3, "b": 5, "gone": 2, "later": 20}
    assert _newer(indexes, "p/", 15, ours) == {"b", "new", "gone"}


def test_a_service_written_during_a_read_keeps_its_newer_keys_and_is_not_read_again():
    mirror = Mirror(None, key_prefix="g/", resources_prefix="r/", grace=30.0,
                    watch_pause=1.0, on_services=lambda names: None, on_computes=lambda names: None)
    mine = DesiredRecord(3, 20, {"a": 3}, 20)  # written here while the read was in flight
    read = DesiredRecord(2, 10, {"a": 2}, 10, {"paused": True}, 15)
    assert later(mine, read) == DesiredRecord(3, 20, {"a": 3}, 20, {"paused": True}, 15)

    async def install(meanwhile):
        mirror.services.put("web", mine)
        mirror._pending_services = set()
        mirror._written_meanwhile = meanwhile
        await mirror._install({"web": read}, {})
        return mirror.services.get("web"), mirror._pending_services

    assert asyncio.run(install({("service", "web")})) == (later(mine, read), set())
    # A deletion leaves no index to compare with: read again.
    assert asyncio.run(install({("deleted", "web")}))[1] == {"web"}


def test_a_burst_is_read_one_by_one_unless_it_changed_most_services():
    mirror = Mirror(None, key_prefix="g/", resources_prefix="r/", grace=30.0,
                    watch_pause=1.0, on_services=lambda names: None, on_computes=lambda names: None)
    assert not mirror._worth_a_resync(2000) and mirror._worth_a_resync(2001)
    for i in range(10000):
        mirror.services.put(f"s{i}", DesiredRecord(1, i + 1, {}, 0))
    assert not mirror._worth_a_resync(5000)  # re-read one by one: cheaper than everything
    assert mirror._worth_a_resync(5001)


def test_placements_the_leader_writes_reach_a_follower_through_one_entry_per_transaction(
        start_replica, consul, prefix):
    leader = start_replica()
    wait_until(leader.leads, what="the first replica to lead")
    follower = start_replica()
    assert leader.request("POST", "/compute", {
        "name": "a", "connector": "http://127.0.0.1:9"}).status_code == 201
    consul.kv_put_many({f"{prefix}resources/s{i}": "2" for i in range(40)})  # another tool

    def placed_on_the_follower():
        services = follower.request("GET", "/service").json()
        return all(services.get(f"s{i}", {}).get("placement") == {"a": 2} for i in range(40))
    wait_until(placed_on_the_follower, what="the leader's placements on the follower")
    journal = consul.kv_keys(f"{prefix}changes/")
    assert not any(key.startswith(f"{prefix}changes/services/s") for key in journal)
    assert 1 <= sum(key.startswith(f"{prefix}changes/batch/") for key in journal) <= 3
