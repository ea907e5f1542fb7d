"""Keep-alive HTTP load generators for the benches: wrk when it is on PATH, else asyncio.

Both run N connections, each sending its next request as soon as the previous answer is
read (a closed loop, HTTP/1.1 keep-alive), for a fixed time, and return a Result with the
throughput, the p50/p99 latency and the count of answers that were not 2xx.

wrk (Debian: `apt-get install wrk`) is a C program with its own event loop: it costs the
machine far less CPU per request than any Python client, which matters on 2 cores shared
by the load generator, the server and Consul. The asyncio client below is the fallback; it
needs only the standard library, but it saturates one core at a few thousand requests a
second, so with it the figures of the faster servers are the client's, not theirs.
"""

import asyncio
import json
import math
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    """What to send. With `unique_body` (and `unique_path`), each request gets its own
    body (and path): the callable receives a tag (unique per run and connection/thread)
    and a counter."""
    method: str
    url: str
    unique_body: Callable[[str, int], bytes] | None = None
    content_type: str = "application/json"
    # For wrk: the same body (and path) as Lua; `tag` and `n` are in scope (see _POST_LUA).
    lua_body: str | None = None
    unique_path: Callable[[str, int], str] | None = None
    lua_path: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request, e.g. a token
    ca_file: str | None = None  # https: the asyncio client verifies with it (wrk does not)


@dataclass(frozen=True)
class Result:
    connections: int
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    # Latency histogram: (microseconds, count) pairs, so that runs can be merged exactly.
    histogram: tuple[tuple[int, int], ...] = ()

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return self.percentile(50) / 1e3

    @property
    def p99_ms(self) -> float:
        return self.percentile(99) / 1e3

    def percentile(self, p: float) -> float:
        """The latency (µs) that p% of the requests did not exceed; nan without any."""
        total = sum(count for _, count in self.histogram)
        if not total:
            return float("nan")
        rank, seen = math.ceil(p / 100 * total), 0
        for value, count in self.histogram:
            seen += count
            if seen >= rank:
                return float(value)
        return float(self.histogram[-1][0])

    @classmethod
    def merge(cls, results: list["Result"]) -> "Result":
        counts: Counter = Counter()
        for result in results:
            counts.update(dict(result.histogram))
        return cls(results[0].connections, sum(r.requests for r in results),
                   sum(r.seconds for r in results), sum(r.non2xx for r in results),
                   sum(r.socket_errors for r in results), tuple(sorted(counts.items())))


def choose(preference: str = "auto") -> "LoadGenerator":
    """wrk when it is on PATH (or asked for), else the asyncio client."""
    wrk = shutil.which("wrk")
    if preference == "wrk" and not wrk:
        raise SystemExit("bench: --loadgen wrk, but wrk is not on PATH "
                         "(Debian: apt-get install wrk)")
    if preference in ("auto", "wrk") and wrk:
        return Wrk(wrk)
    return AsyncioClient()


class LoadGenerator:
    name = ""
    cpus: set[int] | None = None  # pin the load generator to these CPUs (None: anywhere)

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Remove what the generator wrote (wrk's scripts)."""

    def run(self, request: Request, connections: int, seconds: float, tag: str) -> Result:
        raise NotImplementedError


# -- wrk ----------------------------------------------------------------------------------

# The whole latency histogram, (µs, count) for each distinct value, so that runs merge.
_DONE_LUA = r"""
function done(summary, latency, requests)
  local non2xx = 0
  for _, t in ipairs(threads) do non2xx = non2xx + (t:get("non2xx") or 0) end
  local e = summary.errors
  local histogram = {}
  for i = 1, #latency do
    local value, count = latency(i)
    histogram[#histogram + 1] = string.format("[%d,%d]", value, count)
  end
  io.write(string.format(
    'BENCH-RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"status_errors":%d,' ..
    '"socket_errors":%d,"histogram":[%s]}\n',
    summary.requests, summary.duration, non2xx, e.status,
    e.connect + e.read + e.write + e.timeout, table.concat(histogram, ",")))
end
"""

_SETUP_LUA = r"""
threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
"""

# A GET: wrk sends one pre-built request (no request() function, so it stays "static",
# its fastest mode); only 4xx/5xx are counted, by wrk itself (summary.errors.status).
_GET_LUA = _SETUP_LUA + _DONE_LUA

# A request with a unique body each time; response() counts every answer that is not 2xx.
_POST_LUA = _SETUP_LUA + r"""
wrk.method = "@METHOD@"
wrk.headers["Content-Type"] = "@CONTENT_TYPE@"
function init(args)
  tag = args[1] .. "-" .. tid
  n = 0
  non2xx = 0
end
function request()
  n = n + 1
  return wrk.format(nil, @PATH@, nil, @BODY@)
end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
""" + _DONE_LUA


class Wrk(LoadGenerator):
    name = "wrk"

    def __init__(self, binary: str):
        self.binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="genisys-bench-wrk-"))

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def describe(self) -> str:
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        first = (version.stdout or version.stderr).splitlines()[0].split(" Copyright")[0]
        return f"wrk ({first}; one thread, keep-alive connections)"

    def run(self, request: Request, connections: int, seconds: float, tag: str) -> Result:
        if request.lua_body:
            script = (_POST_LUA.replace("@METHOD@", request.method)
                      .replace("@CONTENT_TYPE@", request.content_type)
                      .replace("@BODY@", request.lua_body)
                      .replace("@PATH@", request.lua_path or "nil"))
        elif request.method == "GET":
            script = _GET_LUA
        else:
            raise ValueError("a non-GET request needs lua_body for wrk")
        path = self._dir / f"{abs(hash(script))}.lua"
        path.write_text(script)
        # One thread: wrk's single event loop sends far more than one Python server can
        # answer, and leaves the second core to the server (and to Consul).
        command = [self.binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                   "--timeout", "10s", "-s", str(path),
                   *(f"-H{name}: {value}" for name, value in request.headers),
                   request.url, "--", tag]
        cpus = self.cpus
        done = subprocess.run(command, capture_output=True, text=True,
                              preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        for line in done.stdout.splitlines():
            if line.startswith("BENCH-RESULT "):
                raw = json.loads(line.split(" ", 1)[1])
                break
        else:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
        non2xx = raw["non2xx"] if request.lua_body else raw["status_errors"]
        return Result(connections, raw["requests"], raw["duration_us"] / 1e6, non2xx,
                      raw["socket_errors"], tuple((v, c) for v, c in raw["histogram"]))


# -- asyncio fallback ---------------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; request() sends and waits for the whole answer."""

    def __init__(self):
        self.transport = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self._status = 0
        self._need = -1  # bytes of body still expected; -1: headers not parsed; -2: chunked

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    def data_received(self, data):
        self.buffer += data
        if self.waiter and not self.waiter.done():
            self._parse()

    def request(self, raw: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter

    def _parse(self):
        buf = self.buffer
        if self._need == -1:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[:end + 4]
            self._status = int(head[0].split(" ", 2)[1])
            length, chunked = 0, False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            self._need = -2 if chunked else length
        if self._need == -2:  # chunked: wait for the terminating zero-size chunk
            pos = 0
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                if size == 0:
                    trailer_end = buf.find(b"\r\n\r\n", eol)
                    if trailer_end < 0:
                        return
                    del buf[:trailer_end + 4]
                    break
                pos = eol + 2 + size + 2
                if pos > len(buf):
                    return
        else:
            if len(buf) < self._need:
                return
            del buf[:self._need]
        self._need = -1
        self.waiter.set_result(self._status)


class AsyncioClient(LoadGenerator):
    name = "asyncio"

    def describe(self) -> str:
        return ("the asyncio keep-alive client in bench/loadgen.py (wrk is not on PATH; "
                "it uses about one core, so fast servers measure the client: "
                "apt-get install wrk for the real figures)")

    def run(self, request: Request, connections: int, seconds: float, tag: str) -> Result:
        if not self.cpus:
            return asyncio.run(self._run(request, connections, seconds, tag))
        previous = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.cpus)
        try:
            return asyncio.run(self._run(request, connections, seconds, tag))
        finally:
            os.sched_setaffinity(0, previous)

    async def _run(self, request: Request, connections: int, seconds: float, tag: str) -> Result:
        url = urlsplit(request.url)
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        tls = ssl.create_default_context(cafile=request.ca_file) if url.scheme == "https" \
            else None
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = f"Host: {url.netloc}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in request.headers)
        static = (f"{request.method} {target} HTTP/1.1\r\n{headers}\r\n".encode()
                  if request.unique_body is None else None)

        def build(conn_tag: str, n: int) -> bytes:
            if static is not None:
                return static
            body = request.unique_body(conn_tag, n)
            path = request.unique_path(conn_tag, n) if request.unique_path else target
            return (f"{request.method} {path} HTTP/1.1\r\n{headers}"
                    f"Content-Type: {request.content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body

        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        counts = {"non2xx": 0, "errors": 0}
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(index: int):
            conn_tag = f"{tag}-{index}"
            n = 0
            conn = None
            clock = time.perf_counter
            while clock() < deadline:
                if conn is None or conn.closed:
                    try:
                        _, conn = await loop.create_connection(_Connection, host, port,
                                                               ssl=tls)
                    except OSError:
                        counts["errors"] += 1
                        await asyncio.sleep(0.01)
                        continue
                n += 1
                raw = build(conn_tag, n)
                sent = clock()
                try:
                    status = await conn.request(raw)
                except ConnectionError:
                    counts["errors"] += 1
                    conn = None
                    continue
                received = clock()
                if received > deadline:
                    break
                latencies.append(received - sent)
                if not 200 <= status <= 299:
                    counts["non2xx"] += 1
            if conn is not None and conn.transport:
                conn.transport.close()

        await asyncio.gather(*(worker(i) for i in range(connections)))
        elapsed = min(time.perf_counter(), deadline) - start
        histogram = Counter(round(latency * 1e6) for latency in latencies)
        return Result(connections, len(latencies), elapsed, counts["non2xx"], counts["errors"],
                      tuple(sorted(histogram.items())))

