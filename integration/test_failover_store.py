"""ConsulStore.failover_records and failover_write against a real Consul agent, under a
real leader's session (LeaderElection in-process)."""

import asyncio
import json

from genisys.model import Compute
from integration.test_leader_election import election, store_for, until

SERVICES = [f"svc-{i:03d}" for i in range(40)]  # 4 operations each: several transactions


def test_failover_writes_batch_and_refuse_only_a_service_that_changed(consul, prefix):
    changed = SERVICES[3]

    async def scenario():
        store = store_for(consul, prefix)
        store.start()
        await store.create_compute(Compute("a", "http://127.0.0.1:9"))
        for service in SERVICES:
            consul.kv_put(f"{prefix}resources/{service}", "2")
            consul.kv_put(f"{prefix}placements/{service}", json.dumps({"b": 2}))
        _, items = await store.consul.kv.get(prefix, recurse=True)
        index = {item["Key"]: item["ModifyIndex"] for item in items}
        consul.kv_put(f"{prefix}resources/{changed}", "5")  # after the leader read it
        await until(lambda: not store.view_troubles()
                    and "a" in store.desired_snapshot()[0].computes, what="the views")
        written: list[set[str]] = []
        finished = asyncio.Event()

        async def lead(term):
            changes = {s: ({"a": 2}, {"b": 2}, index[f"{prefix}resources/{s}"],
                           index[f"{prefix}placements/{s}"]) for s in SERVICES}
            async for batch in store.failover_write(term.session, changes):
                written.append(batch)
            finished.set()
            await asyncio.Event().wait()

        candidate = election(store, "failover", lead)
        await candidate.start()
        await asyncio.wait_for(finished.wait(), 30)
        await candidate.stop()
        records = await store.failover_records()
        await store.close()
        return written, records

    written, records = asyncio.run(scenario())
    assert len(written) > 1, "one transaction per batch of at most 64 operations"
    assert set().union(*written) == set(SERVICES) - {changed}
    assert records == {s: {"b": 2} for s in SERVICES if s != changed}
    assert json.loads(consul.kv_get(f"{prefix}placements/{SERVICES[0]}")) == {"a": 2}
    assert json.loads(consul.kv_get(f"{prefix}placements/{changed}")) == {"b": 2}
