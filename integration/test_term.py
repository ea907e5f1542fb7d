"""The term that fences scale orders, in-process: a real Consul agent, a real election, a
real kit connector on a real port, the client's way of sending the leader's orders.

A stray header, a Consul reset or a connector restart must never lock out the legitimate
leader; a deposed leader stays fenced."""

import asyncio

import pytest
import requests

from genisys.connector import ConnectorClient, StaleTerm
from genisys.connectors.kit import Connector, listen
from genisys.leader import Term
from integration.test_leader_election import election, store_for, until
from tests.test_connector_client import MemoryBackend

pytestmark = pytest.mark.timeout(60)
STRAY = 999_999_999_999_999_999


def test_the_term_outgrows_any_term_a_connector_saw_and_a_deposed_leader_stays_fenced(
        consul, prefix):
    terms: list[Term] = []

    async def lead(term: Term):
        terms.append(term)
        await asyncio.Event().wait()

    def term_in_consul() -> int:
        return int(consul.kv_get(f"{prefix}term"))

    async def scenario():
        store = store_for(consul, prefix)
        client = ConnectorClient(timeout=2)
        connector = Connector(MemoryBackend())
        connector.define({"name": "web"})
        server, port = listen(connector)
        url = f"http://127.0.0.1:{port}"
        candidate = election(store, "a", lead)

        async def order(number: int, term: Term) -> int:
            return await client.order(url, "web", number, term)

        async def next_term() -> Term:
            """Depose the current leader; the replica campaigns again and wins."""
            count = len(terms)
            requests.put(f"{consul.url}/v1/session/destroy/{terms[-1].session}", timeout=5)
            await until(lambda: len(terms) > count, timeout=15, what="a new term")
            return terms[-1]

        try:
            await candidate.start()
            await until(lambda: terms, what="a term")
            first = terms[0]
            assert first.number == term_in_consul()

            # A stray header: the leader raises its term past it and its order goes through.
            assert await client.scale(url, "web", 0, STRAY) is not None
            assert await order(2, first) == 2
            assert first.number > STRAY and term_in_consul() == first.number

            # A leader change: the new term is above the old one; once the new leader has
            # spoken, the deposed one is refused and cannot raise its term.
            second = await next_term()
            assert second.number > first.number
            assert await order(3, second) == 3
            with pytest.raises(StaleTerm) as refused:
                await order(5, first)
            assert "a newer leader gives the orders" in str(refused.value)
            assert await store.raise_term(first.session, second.number) is None
            assert term_in_consul() == second.number and connector.backend.counts == {"web": 3}

            # A Consul reset loses the term key: the next term starts low again, yet its
            # orders go through, past the term the connector saw.
            requests.delete(f"{consul.url}/v1/kv/{prefix}term", timeout=5)
            third = await next_term()
            assert third.number < second.number
            assert await order(1, third) == 1
            assert third.number > second.number and connector.backend.counts == {"web": 1}
        finally:
            await candidate.stop()
            server.stop()
            client.close()
            store.consul.http.close()

    asyncio.run(scenario())
