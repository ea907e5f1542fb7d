"""The leader's pacing (genisys.pacing) against real Consul answers: a step that cannot
be recorded first sends nothing, and is decided again soon."""

import asyncio
import time

from genisys.devconsul import free_port
from genisys.leader import Term
from genisys.pacing import RETRY, Pacer
from genisys.plan import Desired, ScaleOrder
from genisys.store import ConsulStore
from genisys.velocity import Limits

DESIRED = Desired({"a": "http://127.0.0.1:9"}, {"web": 6}, {"web": {"a": 6}})
ORDERS = [ScaleOrder("web", "a", 6, 0)]


async def nothing_above(_session, _above):
    return None


def allow(make_store, session: str):
    async def scenario():
        store = make_store()  # on the loop it runs on: its HTTP client belongs to it
        pacer = Pacer(store, Limits(max_step=2))
        try:
            before = time.time()
            allowed, due = await pacer.allow(Term(1, session, lambda term: True, nothing_above),
                                             DESIRED, ORDERS, {("web", "a"): 0})
            return allowed, due, before
        finally:
            await store.close()
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def test_no_order_goes_while_consul_does_not_answer():
    allowed, due, before = allow(lambda: ConsulStore("127.0.0.1", free_port(), timeout=1.0),
                                 "s")
    assert allowed == []
    assert before + RETRY <= due["web"] <= time.time() + RETRY


def test_no_order_goes_when_the_session_does_not_hold_the_lock(consul, prefix):
    def store():
        return ConsulStore(consul.host, consul.port, key_prefix=prefix,
                           resources_key_prefix=f"{prefix}resources/")

    allowed, due, _ = allow(store, "00000000-0000-0000-0000-000000000000")
    assert (allowed, list(due)) == ([], ["web"])
    assert consul.kv_get(f"{prefix}steps/web") is None
