"""ConnectorClient over real HTTP: faulty connector processes and in-process kit servers.

Whatever a connector answers, the client raises ConnectorError (one sentence) or returns
a valid count: never another exception.
"""

import asyncio
import contextlib

import pytest

from genisys.connector import ConnectorClient, ConnectorError, StaleTerm
from genisys.connectors.kit import Backend, Connector, listen
from genisys.model import check_fields, validate_name
from genisys.protocol import MAX_TERM
from tests.connector_helpers import call

pytestmark = pytest.mark.timeout(60)


class MemoryBackend(Backend):
    """Counts in memory: the kit's protocol with nothing behind it."""

    def validate(self, definition):
        check_fields(definition, ("name",))
        return {"name": validate_name(definition["name"])}

    def __init__(self):
        self.counts = {}

    async def scale(self, definition, number):
        self.counts[definition["name"]] = number

    async def status(self, definition):
        return self.counts.get(definition["name"], 0)


def with_client(scenario):
    """Run `scenario(client)` on a fresh loop with a fresh client."""
    async def run():
        client = ConnectorClient(timeout=2)
        try:
            return await scenario(client)
        finally:
            client.close()
    return asyncio.run(run())


@contextlib.contextmanager
def kit_connector():
    """An in-process kit connector on a real port with the service `web` defined:
    (connector, its URL)."""
    connector = Connector(MemoryBackend())
    connector.define({"name": "web"})
    server, port = listen(connector)
    try:
        yield connector, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def expect_error(call_, *words):
    with pytest.raises(ConnectorError) as caught:
        await call_
    message = str(caught.value)
    assert all(word in message for word in words), message
    return message


def test_a_deeply_nested_answer_is_invalid_json_not_a_recursion_error(faulty):
    url = faulty("deepjson")

    async def scenario(client):
        await expect_error(client.bulk_status(url), "answered invalid JSON to GET /status")
        await expect_error(client.status(url, "web"), "answered invalid JSON")
        # A 2xx to an order accepts it, whatever its body: the count is then unknown.
        assert await client.scale(url, "web", 2, None) is None

    with_client(scenario)


def test_an_empty_answer_to_a_scale_order_is_success(faulty):
    url = faulty("empty")

    async def scenario(client):
        assert await client.scale(url, "web", 3, 7) is None
        assert await client.status(url, "web") == 3

    with_client(scenario)


def test_an_html_error_page_is_reduced_to_a_short_plain_excerpt(faulty):
    url = faulty("html")

    async def scenario(client):
        message = await expect_error(client.scale(url, "web", 1, None),
                                     f"{url} answered 500 to POST /service/web/scale: ",
                                     "Internal Server Error")
        assert "<" not in message and "padding" not in message and len(message) < 200
        await expect_error(client.status(url, "web"), "answered 500 to GET /service/web/status")

    with_client(scenario)


def test_a_url_curl_cannot_use_is_a_connector_error():
    async def scenario(client):
        await expect_error(client.bulk_status("http://ü:7051"), "is not a usable connector URL")
        await expect_error(client.scale("http://ü:7051", "web", 1, 3), "http://ü:7051")

    with_client(scenario)


def test_service_names_travel_percent_encoded():
    async def scenario(client):
        with kit_connector() as (connector, url):
            # Unquoted, this would be POST /service/web/scale?/scale: an order for "web".
            await expect_error(client.scale(url, "web/scale?", 5, None), "answered 400")
            await expect_error(client.status(url, "web/status?x"), "answered 400")
            assert await client.status(url, "web") == 0
            assert connector.backend.counts == {}

    with_client(scenario)


def test_a_stale_term_409_names_the_highest_term_seen():
    async def scenario(client):
        with kit_connector() as (connector, url):
            assert await client.scale(url, "web", 1, 999_999_999_999_999_999) == 1
            with pytest.raises(StaleTerm) as caught:
                await client.scale(url, "web", 2, 5)
            assert caught.value.seen == 999_999_999_999_999_999
            assert await client.scale(url, "web", 3, 1_000_000_000_000_000_000) == 3
            # A kit accepts terms up to MAX_TERM and refuses larger ones with 400.
            assert await client.scale(url, "web", 4, MAX_TERM) == 4
            status, body = await asyncio.to_thread(
                call, "POST", f"{url}/service/web/scale", {"number": 5},
                {"X-Genisys-Term": str(MAX_TERM + 1)})
            assert status == 400 and "at most" in body["error"], body
            assert connector.backend.counts == {"web": 4}

    with_client(scenario)


def test_progress_names_the_target_of_an_order_in_progress():
    class SlowBackend(MemoryBackend):
        def __init__(self):
            super().__init__()
            self.release = asyncio.Event()

        async def scale(self, definition, number):
            await self.release.wait()
            await super().scale(definition, number)

    async def scenario(client):
        backend = SlowBackend()
        connector = Connector(backend)
        connector.define({"name": "web"})
        server, port = listen(connector)
        url = f"http://127.0.0.1:{port}"
        try:
            order = asyncio.create_task(connector.scale("web", 3))
            assert await client.progress(url, "web") == (0, 3)
            backend.release.set()
            assert await order == 3
            assert await client.progress(url, "web") == (3, None)
            assert await client.status(url, "web") == 3
        finally:
            server.stop()

    with_client(scenario)
