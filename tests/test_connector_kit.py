"""The connector kit over real HTTP: protocol, errors, serialisation, the term fence."""

import asyncio
import http.client
import json
import random
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from genisys.computes_file import DefinitionFileError
from genisys.connectors.kit import MAX_BODY, Backend, BackendError, Connector, listen
from genisys.model import ValidationError, check_fields, validate_name
from tests.connector_helpers import ROOT, ConnectorProcess, call, unique, wait_until

pytestmark = pytest.mark.timeout(60)


class RecordingBackend(Backend):
    """Counts in memory and records how many calls overlap, per service and overall."""

    name = "recording"

    def __init__(self, delay: float = 0.0, cleanup: float = 0.0):
        self.delay = delay
        self.cleanup = cleanup  # seconds a replaced order takes to wind down
        self.counts: dict[str, int] = {}
        self.busy: dict[str, int] = {}
        self.most_busy: dict[str, int] = {}
        self.most_busy_overall = 0
        self.started: dict[str, asyncio.Event] = {}
        self.closed = False

    def validate(self, definition):
        check_fields(definition, ("name",), ("size",))
        size = definition.get("size", 1)
        if not isinstance(size, int):
            raise ValidationError("size must be an integer.")
        return {"name": validate_name(definition["name"]), "size": size}

    async def scale(self, definition, number):
        name = definition["name"]
        if number == 13:
            raise BackendError("the backend refuses unlucky numbers.")
        if number == 666:
            raise RuntimeError("a bug in the backend")
        self.busy[name] = self.busy.get(name, 0) + 1
        self.most_busy[name] = max(self.most_busy.get(name, 0), self.busy[name])
        self.most_busy_overall = max(self.most_busy_overall, sum(self.busy.values()))
        self.started.setdefault(name, asyncio.Event()).set()
        try:
            if name == "waits-for-other":  # proves that another service runs meanwhile
                await asyncio.wait_for(self.started.setdefault("other", asyncio.Event()).wait(), 10)
            await asyncio.sleep(600 if number >= 1000 else self.delay)  # huge orders: slow
            self.counts[name] = number
        except asyncio.CancelledError:
            await asyncio.sleep(self.cleanup)
            raise
        finally:
            self.busy[name] -= 1

    async def status(self, definition):
        if definition["name"] == "garbage":
            return "three"
        if definition["name"] == "cancelled":
            raise asyncio.CancelledError()  # a bug: the backend cancels itself
        return self.counts.get(definition["name"], 0)

    async def close(self):
        self.closed = True


class Served:
    """A kit application on a real port, its event loop in a thread."""

    def __init__(self, backend: Backend, **options):
        self.backend = backend
        self.options = options

    def __enter__(self):
        ready = threading.Event()

        async def serve():
            self.connector = Connector(self.backend, **self.options)
            server, port = listen(self.connector)
            self.url = f"http://127.0.0.1:{port}"
            self.loop = asyncio.get_running_loop()
            self.done = asyncio.Event()
            ready.set()
            await self.done.wait()
            server.stop()
            await self.backend.close()

        self.thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.done.set)
        self.thread.join(10)

    def call(self, method, path, body=None, **kwargs):
        return call(method, self.url + path, body, **kwargs)

    def snapshot(self):
        return self.call("GET", "/service"), self.call("GET", "/status")


@pytest.fixture
def served():
    with Served(RecordingBackend()) as served:
        yield served


def test_definitions_can_be_created_read_listed_and_replaced(served):
    assert served.call("POST", "/service", {"name": "web"}) == (201, {"name": "web", "size": 1})
    assert served.call("POST", "/service", {"name": "api", "size": 2})[0] == 201
    assert served.call("GET", "/service") == (200, {"web": {"name": "web", "size": 1},
                                                    "api": {"name": "api", "size": 2}})
    assert served.call("GET", "/service/api") == (200, {"name": "api", "size": 2})
    assert served.call("PUT", "/service/web", {"size": 3}) == (200, {"name": "web", "size": 3})
    assert served.call("PUT", "/service/db", {"name": "db"}) == (201, {"name": "db", "size": 1})
    assert served.call("GET", "/service/web") == (200, {"name": "web", "size": 3})


def test_scale_answers_once_done_and_status_follows(served):
    served.call("POST", "/service", {"name": "web"})
    served.call("POST", "/service", {"name": "api"})
    assert served.call("POST", "/service/web/scale", {"number": 3}) == (
        200, {"service": "web", "running_resources": 3})
    # httpie's number=2 sends a string
    assert served.call("POST", "/service/api/scale", {"number": "2"})[1]["running_resources"] == 2
    assert served.call("GET", "/service/web/status") == (200, {"running_resources": 3})
    assert served.call("GET", "/status") == (200, {"running_resources": {"web": 3, "api": 2}})
    assert served.call("POST", "/service/web/scale", {"number": 0})[1]["running_resources"] == 0
    assert served.call("GET", "/health")[0] == 200


BIG = json.dumps({"name": "big", "size": 1, "pad": "x" * MAX_BODY}).encode()

BAD_REQUESTS = [
    # (method, path, JSON body or raw bytes, headers, status, words in the error)
    ("POST", "/service", b"{not json", {}, 400, "not valid JSON"),
    ("POST", "/service", b"", {}, 400, "not valid JSON"),
    ("POST", "/service", b"\xff\xfe", {}, 400, "not valid JSON"),
    ("POST", "/service", b"[1, 2]", {}, 400, "JSON object"),
    ("POST", "/service", b"[" * 1000, {}, 400, "nested more than 32 levels"),
    ("POST", "/service", b'{"a":' * 5000, {}, 400, "nested more than 32 levels"),
    ("POST", "/service", b'{"name": "x", "size": ' + b"1" * 5000 + b"}", {}, 400, "too long"),
    ("POST", "/service", b'{"name": "x", "size": NaN}', {}, 400, "NaN is not a JSON value"),
    ("POST", "/service", b'"web"', {}, 400, "JSON object"),
    ("POST", "/service", {"name": "x", "colour": "red"}, {}, 400, "unknown field 'colour'"),
    ("POST", "/service", {"size": 1}, {}, 400, "missing field 'name'"),
    ("POST", "/service", {"name": "a/b"}, {}, 400, "invalid"),
    ("POST", "/service", {"name": "a b"}, {}, 400, "invalid"),
    ("POST", "/service", {"name": ".."}, {}, 400, "invalid"),
    ("POST", "/service", {"name": ""}, {}, 400, "invalid"),
    ("POST", "/service", {"name": "x" * 65}, {}, 400, "invalid"),
    ("POST", "/service", {"name": 7}, {}, 400, "must be a string"),
    ("POST", "/service", {"name": "new", "size": "big"}, {}, 400, "size"),
    ("POST", "/service", {"name": "web"}, {}, 409, "already defined"),
    ("POST", "/service", BIG, {}, 413, "64 KiB"),
    ("PUT", "/service/web", {"name": "other"}, {}, 400, "differs"),
    ("PUT", "/service/a%20b", {}, {}, 400, "invalid"),
    ("PUT", "/service/web", b"[]", {}, 400, "JSON object"),
    ("PUT", "/service/web", b"[" * 1000, {}, 400, "nested"),
    ("PUT", "/service/web", BIG, {}, 413, "64 KiB"),
    ("POST", "/service/web/scale", {"number": -1}, {}, 400, ">= 0"),
    ("POST", "/service/web/scale", {"number": "-1"}, {}, 400, ">= 0"),
    ("POST", "/service/web/scale", {"number": "three"}, {}, 400, "integer"),
    ("POST", "/service/web/scale", {"number": 1.5}, {}, 400, "integer"),
    ("POST", "/service/web/scale", {"number": True}, {}, 400, "boolean"),
    ("POST", "/service/web/scale", {"number": None}, {}, 400, "integer"),
    ("POST", "/service/web/scale", {"number": 100_001}, {}, 400, "at most"),
    ("POST", "/service/web/scale", {}, {}, 400, "missing field 'number'"),
    ("POST", "/service/web/scale", {"number": 1, "compute": "x"}, {}, 400, "unknown field"),
    ("POST", "/service/web/scale", b"3", {}, 400, "JSON object"),
    ("POST", "/service/web/scale", b"[" * 1000, {}, 400, "nested"),
    ("POST", "/service/web/scale", {"number": "\u0663"}, {}, 400, "integer"),
    ("POST", "/service/web/scale", {"number": "1000000000"}, {}, 400, "at most 100000"),
    ("POST", "/service/web/scale", BIG, {}, 413, "64 KiB"),
    ("POST", "/service/web/scale", {"number": 1}, {"X-Genisys-Term": "abc"}, 400, "X-Genisys-Term"),
    ("POST", "/service/web/scale", {"number": 1}, {"X-Genisys-Term": "-1"}, 400, "X-Genisys-Term"),
    ("POST", "/service/nope/scale", {"number": 1}, {}, 404, "not defined"),
    ("POST", "/service/a%2Fb/scale", {"number": 1}, {}, 400, "invalid"),
    ("POST", "/service/a%20b/scale", {"number": 1}, {}, 400, "invalid"),
    ("POST", "/service/../scale", {"number": 1}, {}, 400, "invalid"),
    ("POST", "/service/%2E%2E/scale", {"number": 1}, {}, 400, "invalid"),
    ("POST", "/service/" + "x" * 65 + "/scale", {"number": 1}, {}, 400, "invalid"),
    ("GET", "/service/nope/status", None, {}, 404, "not defined"),
    ("GET", "/service/nope", None, {}, 404, "not defined"),
    ("GET", "/service/a%20b", None, {}, 400, "invalid"),
    ("GET", "/service/a/b", None, {}, 404, "no /service/a/b"),
    ("GET", "/nope", None, {}, 404, "no /nope"),
    ("GET", "/nope/" + "x" * 60_000, None, {}, 404, "no /nope/xxx"),
    ("GET", "/service/" + "x" * 60_000, None, {}, 400, "invalid"),
    ("POST", "/service/" + "x" * 60_000 + "/scale", {"number": 1}, {}, 400, "invalid"),
    ("GET", "/service/%FF", None, {}, 400, "nvalid unicode"),
    ("POST", "/service/web/scale", {"number": 1}, {"X-Genisys-Term": "\u00b2"}, 400,
     "X-Genisys-Term"),
    ("FOO", "/nope", None, {}, 404, "no /nope"),
    ("DELETE", "/nope/" + "x" * 60_000, None, {}, 404, "no /nope/xxx"),
    ("FOO", "/service", None, {}, 405, "FOO is not allowed on /service; use GET or POST"),
    ("DELETE", "/service/" + "x" * 60_000, None, {}, 405, "use GET or PUT"),
    ("DELETE", "/service/web", None, {}, 405, "DELETE is not allowed"),
    ("GET", "/service/web/scale", None, {}, 405, "GET is not allowed"),
    ("PUT", "/service/web/status", {}, {}, 405, "PUT is not allowed"),
    ("POST", "/status", {}, {}, 405, "POST is not allowed"),
    ("PATCH", "/service", {}, {}, 405, "PATCH is not allowed"),
    ("DELETE", "/health", None, {}, 405, "DELETE is not allowed"),
]


@pytest.mark.parametrize("method,path,body,headers,status,words", BAD_REQUESTS,
                         ids=[f"{m} {p[:40]} {s}" for m, p, _, _, s, _ in BAD_REQUESTS])
def test_bad_requests_get_one_clear_error_and_change_nothing(
        served, method, path, body, headers, status, words):
    served.call("POST", "/service", {"name": "web"})
    served.call("POST", "/service/web/scale", {"number": 2}, headers={"X-Genisys-Term": "5"})
    before = served.snapshot()
    raw = body if isinstance(body, bytes) else None
    answer = served.call(method, path, None if raw is not None else body, raw=raw,
                         headers=headers)
    assert answer[0] == status, answer
    assert list(answer[1]) == ["error"] and words in answer[1]["error"], answer
    assert answer[1]["error"].endswith("."), answer
    assert len(answer[1]["error"]) < 300, answer  # paths and bodies are echoed in excerpts
    assert served.snapshot() == before
    assert served.connector.highest_term == 5


def test_a_chunked_body_over_64_kib_is_refused_too(served):
    connection = http.client.HTTPConnection("127.0.0.1", int(served.url.rsplit(":", 1)[1]))
    chunks = (b" " * 4096 for _ in range(20))  # no Content-Length: read, counted, refused
    connection.request("POST", "/service", body=chunks, encode_chunked=True,
                       headers={"Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert response.status == 413
    assert "64 KiB" in json.loads(response.read())["error"]
    assert served.call("GET", "/service") == (200, {})


def test_a_body_of_exactly_64_kib_is_read(served):
    body = json.dumps({"name": "web"}).encode()
    assert served.call("POST", "/service", raw=body + b" " * (MAX_BODY - len(body)))[0] == 201


def test_backend_failures_are_json_errors(served):
    served.call("POST", "/service", {"name": "web"})
    assert served.call("POST", "/service/web/scale", {"number": 13}) == (
        503, {"error": "the backend refuses unlucky numbers."})
    status, body = served.call("POST", "/service/web/scale", {"number": 666})
    assert status == 500 and body == {"error": "internal error; the connector's log has the details."}
    assert served.call("GET", "/service/web/status") == (200, {"running_resources": 0})


REPLACED = "replaced this one before it was done."


def test_scale_orders_are_serialised_per_service_and_parallel_across_services():
    with Served(RecordingBackend(delay=0.1, cleanup=0.05)) as served:
        for name in ("web", "waits-for-other", "other"):
            served.call("POST", "/service", {"name": name})
        orders = [("web", n) for n in range(6)] + [("waits-for-other", 1), ("other", 1)]
        with ThreadPoolExecutor(len(orders)) as pool:
            answers = list(pool.map(
                lambda order: served.call("POST", f"/service/{order[0]}/scale",
                                          {"number": order[1]}), orders))
        assert {status for status, _ in answers[:6]} <= {200, 409}
        assert answers[6:] == [(200, {"service": "waits-for-other", "running_resources": 1}),
                               (200, {"service": "other", "running_resources": 1})]
        assert served.backend.most_busy["web"] == 1  # a replaced order winds down first
        assert served.backend.most_busy_overall >= 2


def test_racing_scale_orders_end_in_the_number_of_the_order_that_came_last():
    with Served(RecordingBackend(delay=0.01)) as served:
        served.call("POST", "/service", {"name": "web"})
        numbers = [random.randrange(0, 12) for _ in range(30)]  # 13 fails on purpose
        with ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(
                lambda n: served.call("POST", "/service/web/scale", {"number": n}), numbers))
        done = [body["running_resources"] for status, body in answers if status == 200]
        replaced = [body["error"] for status, body in answers if status == 409]
        assert len(done) + len(replaced) == 30 and done, answers
        assert all(error.endswith(REPLACED) for error in replaced), replaced
        # the order that came last was never replaced: it set the final number
        final = served.call("GET", "/service/web/status")[1]["running_resources"]
        assert final in done


def test_a_newer_order_replaces_the_one_in_progress_which_answers_409():
    with Served(RecordingBackend()) as served:
        served.call("POST", "/service", {"name": "web"})
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(served.call, "POST", "/service/web/scale", {"number": 1000})
            wait_until(lambda: served.backend.busy.get("web"), what="the first order to run")
            # without the replacement, both would wait for the first order's 600 s
            assert served.call("POST", "/service/web/scale", {"number": 0}, timeout=20) == (
                200, {"service": "web", "running_resources": 0})
            assert slow.result(timeout=20) == (409, {
                "error": f"a newer order for web (number 0) {REPLACED}"})
        assert served.call("GET", "/service/web/status")[1] == {"running_resources": 0}


def test_an_order_beyond_the_maximum_is_refused_naming_it():
    with Served(RecordingBackend(), max_instances=5) as served:
        served.call("POST", "/service", {"name": "web"})
        assert served.call("POST", "/service/web/scale", {"number": 5})[0] == 200
        assert served.call("POST", "/service/web/scale", {"number": 6}) == (400, {
            "error": "number 6 is more than the 5 instances per service this connector "
                     "runs at most."})
        assert served.call("GET", "/service/web/status")[1] == {"running_resources": 5}


@pytest.mark.parametrize("service", ["garbage", "cancelled"])
def test_a_backend_bug_of_any_kind_is_a_500_with_a_traceback_never_a_hang(service, caplog):
    with Served(RecordingBackend()) as served:
        served.call("POST", "/service", {"name": service})
        for method, path, body in [("GET", f"/service/{service}/status", None),
                                   ("GET", "/status", None),
                                   ("POST", f"/service/{service}/scale", {"number": 1})]:
            assert served.call(method, path, body, timeout=20) == (
                500, {"error": "internal error; the connector's log has the details."})
        assert served.call("GET", "/health")[0] == 200
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_the_term_fence_refuses_orders_from_an_older_term(served):
    served.call("POST", "/service", {"name": "web"})

    def scale(number, term=None):
        headers = {} if term is None else {"X-Genisys-Term": str(term)}
        return served.call("POST", "/service/web/scale", {"number": number}, headers=headers)

    assert scale(1, 5)[0] == 200
    status, body = scale(2, 4)
    assert status == 409 and body == {
        "error": "term 4 is older than term 5 already seen: a newer leader gives the orders.",
        "term": 5}
    assert served.call("GET", "/service/web/status")[1] == {"running_resources": 1}
    assert scale(3)[0] == 200  # no header: accepted as before
    assert scale(4, 5)[0] == 200  # the same term goes on
    assert scale(5, 8)[0] == 200
    assert scale(6, 7)[0] == 409
    assert served.call("GET", "/service/web/status")[1] == {"running_resources": 5}


def test_an_order_that_waited_while_a_newer_term_arrived_is_refused():
    # The second order waits while the first, replaced, winds down; meanwhile a newer
    # leader's order for another service raises the term.
    with Served(RecordingBackend(cleanup=1.0)) as served:
        served.call("POST", "/service", {"name": "web"})
        served.call("POST", "/service", {"name": "api"})

        def scale(service, number, term):
            return served.call("POST", f"/service/{service}/scale", {"number": number},
                               headers={"X-Genisys-Term": str(term)})

        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(scale, "web", 1000, 10)
            wait_until(lambda: served.backend.busy.get("web"), what="the first order to run")
            queued = pool.submit(scale, "web", 2, 10)  # replaces it, waits for the lock
            wait_until(lambda: len(served.connector._locks["web"]._waiters or ()) == 1,
                       what="the second order to wait")
            assert scale("api", 13, 11)[0] == 503  # refused by the backend; term 11 seen
            assert first.result()[0] == 409
            assert queued.result()[0] == 409 and "older than term 11" in queued.result()[1]["error"]


def test_bulk_status_can_be_switched_off_and_services_auto_defined():
    backend = RecordingBackend()
    backend.bulk_status = False
    backend.auto_define = True
    with Served(backend) as served:
        status, body = served.call("GET", "/status")
        assert status == 404 and "GET /service/{svc}/status" in body["error"]
        assert served.call("POST", "/service/anything/scale", {"number": 2})[0] == 200
        assert served.call("GET", "/service/anything/status") == (200, {"running_resources": 2})
        assert served.call("GET", "/service/bad%20name/status")[0] == 400


def test_a_service_file_defines_services_and_errors_name_the_line(tmp_path):
    connector = Connector(RecordingBackend())
    good = tmp_path / "services.py"
    good.write_text('"""Services."""\nweb = {"name": "web"}\napi = {"name": "api", "size": 2}\n')
    connector.load(good)
    assert list(connector.definitions) == ["web", "api"]

    bad = tmp_path / "bad.py"
    for text, message in [
        ('web = {"name": "web"}\nweb2 = {"name": "web"}\n', "bad.py:2: service 'web' is defined twice."),
        ('web = {"name": "web", "colour": 1}\n', "bad.py:1: unknown field 'colour'."),
        ('web = {"name": "a b"}\n', "bad.py:1: name 'a b' is invalid"),
        ('import os\n', "bad.py:1: only assignments"),
    ]:
        bad.write_text(text)
        with pytest.raises(DefinitionFileError, match=message.replace(".", r"\.")):
            Connector(RecordingBackend()).load(bad)


def test_the_guide_example_is_a_working_connector(tmp_path):
    with ConnectorProcess("examples.memory_connector", "--capacity", "5", "--max-instances", "4",
                          log_path=tmp_path / "memory.log") as connector:
        assert connector.call("POST", "/service", {"name": "web", "size": "large"})[0] == 201
        assert connector.call("POST", "/service", {"name": "api"})[0] == 201
        assert connector.call("POST", "/service", {"name": "x", "size": "huge"})[0] == 400
        assert connector.call("POST", "/service/web/scale", {"number": "3"}) == (
            200, {"service": "web", "running_resources": 3})
        assert connector.call("POST", "/service/api/scale", {"number": 3}) == (
            503, {"error": "this backend is full: 3 of its 5 instances run other services."})
        assert connector.call("POST", "/service/web/scale", {"number": 5}) == (400, {
            "error": "number 5 is more than the 4 instances per service this connector "
                     "runs at most."})
        assert connector.call("GET", "/status") == (200, {"running_resources": {"web": 3,
                                                                                 "api": 0}})
        assert connector.stop() == 0
        assert "SIGTERM received: stopping" in connector.log() and "stopped" in connector.log()


def test_sigint_stops_a_connector_cleanly(tmp_path):
    with ConnectorProcess("bench.counting_connector", log_path=tmp_path / "c.log") as connector:
        assert connector.stop(signal.SIGINT) == 0
        assert "SIGINT received: stopping" in connector.log()


def test_a_thousand_concurrent_scale_orders_are_served(tmp_path):
    with ConnectorProcess("bench.counting_connector", "--latency", "0.05",
                          log_path=tmp_path / "c.log") as connector:
        names = [f"svc-{i}" for i in range(1000)]

        async def fire():
            from tornado.httpclient import AsyncHTTPClient
            client = AsyncHTTPClient(force_instance=True, max_clients=1000)
            try:
                return await asyncio.gather(*(client.fetch(
                    f"{connector.url}/service/{name}/scale", method="POST",
                    body=json.dumps({"number": i % 7}), headers={"X-Genisys-Term": "7"},
                    raise_error=False, connect_timeout=30, request_timeout=60)
                    for i, name in enumerate(names)))
            finally:
                client.close()

        responses = asyncio.run(fire())
        assert [r.code for r in responses] == [200] * 1000
        status, body = connector.call("GET", "/status")
        assert body["running_resources"] == {name: i % 7 for i, name in enumerate(names)}
        assert "scale svc-3 from 0 to 3 (term 7): 3 running" in connector.log()


def test_a_connector_without_bulk_status_answers_404(tmp_path):
    with ConnectorProcess("bench.counting_connector", "--no-bulk", "--no-auto-define",
                          log_path=tmp_path / "c.log") as connector:
        assert connector.call("GET", "/status")[0] == 404
        assert connector.call("GET", "/service/web/status")[0] == 404
        name = unique("web")
        assert connector.call("POST", "/service", {"name": name})[0] == 201
        assert connector.call("GET", f"/service/{name}/status") == (200, {"running_resources": 0})


def test_a_port_in_use_stops_the_start_with_a_clear_error(tmp_path):
    with ConnectorProcess("bench.counting_connector", log_path=tmp_path / "a.log") as first:
        result = subprocess.run(
            [sys.executable, "-m", "bench.counting_connector", "--port", str(first.port)],
            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot start: 127.0.0.1:{first.port} is not available: " in result.stderr


def test_a_405_names_the_allowed_methods_in_its_allow_header(served):
    for method, path, allowed in [("DELETE", "/service/web", "GET, PUT"),
                                  ("GET", "/service/web/scale", "POST"),
                                  ("PATCH", "/service", "GET, POST"),
                                  ("BREW", "/health", "GET")]:
        connection = http.client.HTTPConnection("127.0.0.1", int(served.url.rsplit(":", 1)[1]))
        connection.request(method, path)
        response = connection.getresponse()
        assert (response.status, response.getheader("Allow")) == (405, allowed), (method, path)
        error = json.loads(response.read())["error"]
        assert error.endswith(f"use {allowed.replace(', ', ' or ')}.")
        connection.close()


def test_status_names_the_target_while_an_order_is_in_progress():
    with Served(RecordingBackend(delay=1.0)) as served:
        served.call("POST", "/service", {"name": "web"})
        with ThreadPoolExecutor(1) as pool:
            order = pool.submit(served.call, "POST", "/service/web/scale", {"number": 3})
            wait_until(lambda: served.call("GET", "/service/web/status")
                       == (200, {"running_resources": 0, "target": 3}),
                       what="the target while scaling")
            assert order.result()[0] == 200
        assert served.call("GET", "/service/web/status") == (200, {"running_resources": 3})
