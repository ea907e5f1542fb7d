"""API bench: one Genisys replica beside Consul's KV API and a bare Tornado handler.

    python -m bench.api [--duration 5] [--warmup 1] [--connections 1,16] [--auth]
                                                                            (or: make bench)

One run starts a Consul dev agent, defines 100 computes, starts one replica
(`python main.py --config <tmp> --log-level WARNING`) and, as a separate process, a bare
Tornado handler that returns the same JSON from memory: the ceiling of one Python process.
It then measures, at each connection count, with keep-alive connections (wrk when it is on
PATH, else the asyncio client of bench/loadgen.py):

    Genisys  GET /compute/<name>, GET /compute (100 computes), POST /compute (real creates)
    with --auth, also: GET /compute/<name> on a second replica with authentication on, sent
             a `read` token (its own key prefix, its own 100 computes, leading them alike)
    bare Tornado  GET /compute/<name>, GET /compute
    Consul   GET /v1/kv/<prefix>computes/<name>  (the same read, made to Consul directly)
    with --tls, a second replica serving HTTPS (certificates from `consul tls`):
    Genisys over https GET /compute/<name>, in turns with the same read over http

Genisys and bare Tornado are measured in turns of one second (ABAB...) and each side's turns
are merged, so that the machine's speed changing during the run touches both alike. It
prints a table, the ratios and whether the targets are met. Everything is on loopback;
nothing is written to disk but temporary files. Figures, never assertions.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench import loadgen
from bench.proc import cpu_seconds, machine_busy, own_cpu
from genisys.devconsul import INSTALL_HINT, find_consul_binary, free_port, make_certificates
from tests.support import ChildProcess, ConsulAgent, Replica, http_request, wait_until

COMPUTE_COUNT = 100
ITEM = "c050"  # the compute that GET /compute/<name> reads

GET_ITEM = "Genisys GET /compute/<name>"
BARE_ITEM = "bare Tornado GET /compute/<name>"
KV_ITEM = "Consul GET /v1/kv/<prefix>computes/<name>"
GET_LIST = f"Genisys GET /compute ({COMPUTE_COUNT} computes)"
BARE_LIST = f"bare Tornado GET /compute ({COMPUTE_COUNT})"
POST = "Genisys POST /compute (creates)"
AUTH_ITEM = "Genisys GET /compute/<name> with a token"
BOOTSTRAP = "bench-bootstrap-" + "0" * 32
TLS_ITEM = "Genisys over https GET /compute/<name>"
HTTP_ITEM = "Genisys over http GET /compute/<name>"  # the same as GET_ITEM, in TLS's turns

# Targets for Genisys GET /compute/<name> at 16 connections on one replica.
TARGET_SHARE_OF_BARE = 0.80
TARGET_P99_MS = 15.0
BUSY = 0.10  # CPU (in cores) used by other programs above which a row is called noisy


def compute_definitions(count: int = COMPUTE_COUNT) -> dict[str, dict]:
    """The computes of the bench, in definition order; the same in every process."""
    return {f"c{i:03d}": {"name": f"c{i:03d}", "connector": f"http://127.0.0.1:{20000 + i}"}
            for i in range(count)}


# -- the bare Tornado server (run as `python -m bench.api --serve-bare PORT`) ---------------

def make_bare_app(computes: dict[str, dict]):
    """The same JSON as Genisys, from memory: routing, one dict lookup, json.dumps, finish."""
    import tornado.web

    class ComputesHandler(tornado.web.RequestHandler):
        def get(self):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(computes))

    class ComputeHandler(tornado.web.RequestHandler):
        def get(self, name):
            compute = computes.get(name)
            if compute is None:
                self.set_status(404)
                compute = {"error": f"compute {name!r} does not exist."}
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(compute))

    return tornado.web.Application([(r"/compute/?", ComputesHandler),
                                    (r"/compute/([^/]+)", ComputeHandler)])


def serve_bare(port: int, count: int) -> int:
    import asyncio
    import logging
    import signal

    # As the replica under the bench: no access log line below WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from tornado.httpserver import HTTPServer

    async def serve():
        # xheaders as main.py's server
        server = HTTPServer(make_bare_app(compute_definitions(count)), xheaders=True)
        server.listen(port, "127.0.0.1")
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        server.stop()

    asyncio.run(serve())
    return 0


# -- processes ----------------------------------------------------------------------------

def create_compute(url: str) -> loadgen.Request:
    """POST /compute, a new compute each time. Each has its own connector URL (two computes
    may not share one); nothing listens on port 9, so the leader's calls fail at once."""
    return loadgen.Request(
        "POST", f"{url}/compute",
        unique_body=lambda tag, n: (f'{{"name":"{tag}-{n}",'
                                    f'"connector":"http://127.0.0.1:9/{tag}-{n}"}}').encode(),
        lua_body="""'{"name":"' .. tag .. '-' .. n .. '","connector":"http://127.0.0.1:9/' """
                 """.. tag .. '-' .. n .. '"}'""")


def serves_computes(url: str, ca_file: str | None = None, headers: dict | None = None) -> bool:
    """The server at `url` lists the bench's computes (all of them)."""
    status, body = http_request("GET", f"{url}/compute", headers=headers, timeout=5,
                                ca_file=ca_file)
    return status == 200 and len(json.loads(body)) == COMPUTE_COUNT


def ready(process, predicate):
    """A wait_until predicate: raise if `process` exited, False while it does not answer."""
    def check():
        process.check()
        try:
            return predicate()
        except OSError:
            return False
    return check


# -- the bench ----------------------------------------------------------------------------

class Row:
    def __init__(self, label: str, result: loadgen.Result, cpu: float | None,
                 others: float | None):
        self.label, self.result = label, result
        self.cpu = cpu  # the measured server's CPU, in cores
        self.others = others  # CPU used by other programs on the machine, in cores

    @property
    def per_cpu_second(self) -> float | None:
        """Requests per CPU-second of the server: its cost, whatever else ran."""
        return self.result.rps / self.cpu if self.cpu else None


class CpuMeter:
    """CPU time of the server measured, and of everything on the machine that is not this
    bench (its servers, Consul, the load generator): a busy machine makes figures noisy."""

    def __init__(self, ours: list[int]):
        self.ours = ours
        self.totals: dict[str, list[float | None]] = {}  # label: [seconds, server, others]

    def sample(self, server: int):
        ours = [cpu_seconds(pid) for pid in self.ours]
        return (time.monotonic(), cpu_seconds(server), machine_busy(),
                None if None in ours else sum(ours) + own_cpu())

    def add(self, label: str, before, after) -> None:
        totals = self.totals.setdefault(label, [0.0, 0.0, 0.0])
        totals[0] += after[0] - before[0]
        if totals[1] is not None:
            totals[1] = (None if None in (after[1], before[1])
                         else totals[1] + after[1] - before[1])
        if totals[2] is not None:
            totals[2] = (None if None in (after[2], before[2], after[3], before[3]) else
                         totals[2] + max(0.0, (after[2] - before[2]) - (after[3] - before[3])))

    def rates(self, label: str) -> tuple[float | None, float | None]:
        """The server's CPU and the others', in cores, over the label's measurements."""
        seconds, server, others = self.totals.pop(label)
        return tuple(None if v is None or not seconds else v / seconds for v in (server, others))


def measure(tool: loadgen.LoadGenerator, labels: list[str], requests: dict,
            connections: int, args, run_id: str, meter: CpuMeter) -> list[Row]:
    """Measure the labels of a group at one connection count. Two or more labels (what is
    compared) are measured in turns of one second, ABAB..., so that a change in the
    machine's speed during the run (another program, a neighbour of the VM) touches all
    alike; the turns of each label are then merged."""
    tag = f"p{run_id}-c{connections}"
    if args.warmup:
        for label in labels:
            tool.run(requests[label][0], connections, args.warmup, f"{tag}w")
    turns = args.duration if len(labels) > 1 else 1
    parts: dict[str, list[loadgen.Result]] = {label: [] for label in labels}
    for turn in range(turns):
        for label in labels:
            request, pid = requests[label]
            before = meter.sample(pid)
            parts[label].append(tool.run(request, connections, args.duration / turns,
                                         f"{tag}m{turn}"))
            meter.add(label, before, meter.sample(pid))
    rows = []
    for label in labels:
        row = Row(label, loadgen.Result.merge(parts[label]), *meter.rates(label))
        print(format_row(row), flush=True)
        rows.append(row)
    return rows


HEADER = (f"{'endpoint':<42} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'non-2xx':>7} {'errors':>6} {'srv CPU':>7} {'req/CPU-s':>9} {'others':>6}")


def format_row(row: Row) -> str:
    r = row.result
    cpu = f"{row.cpu * 100:.0f}%" if row.cpu is not None else "-"
    per_cpu = f"{row.per_cpu_second:,.0f}" if row.per_cpu_second else "-"
    others = f"{row.others * 100:.0f}%" if row.others is not None else "-"
    return (f"{row.label:<42} {r.connections:>5} {r.rps:>7,.0f} {r.p50_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.non2xx:>7} {r.socket_errors:>6} {cpu:>7} {per_cpu:>9} "
            f"{others:>6}")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=(
        "Throughput and latency of one Genisys replica, beside Consul's KV API and a bare "
        "Tornado handler, measured in one run."))
    parser.add_argument("--duration", type=int, default=5, metavar="SECONDS",
                        help="length of each measurement (default 5)")
    parser.add_argument("--warmup", type=int, default=1, metavar="SECONDS",
                        help="warm-up before each measurement, not counted (default 1)")
    parser.add_argument("--connections", default="1,16", metavar="N[,N...]",
                        help="concurrent keep-alive connections (clients), comma-separated "
                             "(default 1,16)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "asyncio"], default="auto",
                        help="auto: wrk when it is on PATH, else the asyncio client")
    parser.add_argument("--replica-log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="the replica's --log-level (default WARNING: no access log line "
                             "per request; INFO measures its cost)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the load generator and the servers to separate CPUs")
    parser.add_argument("--only", default="", metavar="WORD[,WORD...]",
                        help="measure only the endpoints whose label contains one of these "
                             "words, e.g. --only POST or --only '<name>'")
    parser.add_argument("--auth", action="store_true",
                        help="also measure GET /compute/<name> with authentication on (a "
                             "second replica, sent a read token), in turns with the first")
    parser.add_argument("--tls", action="store_true", help=(
        "also start a replica serving HTTPS and measure GET /compute/<name> over https in "
        "turns with http: the cost of TLS"))
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
        assert args.connections and all(c > 0 for c in args.connections)
    except (ValueError, AssertionError):
        parser.error("--connections takes positive integers separated by commas, e.g. 1,16")
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be >= 1 and --warmup >= 0 (whole seconds)")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve_bare:
        return serve_bare(args.serve_bare, COMPUTE_COUNT)
    if find_consul_binary() is None:
        print(f"bench: {INSTALL_HINT}", file=sys.stderr)
        return 1
    tool = loadgen.choose(args.loadgen)
    print(f"load generator: {tool.describe()}")
    with ExitStack() as stack:
        stack.callback(tool.close)
        return run(args, tool, stack)


def cpu_plan(pin: bool, tool: loadgen.LoadGenerator) -> tuple[set[int] | None, str]:
    """Pin the load generator to one CPU and both Python servers to another, so that
    they do not take turns on the same core (the figures vary much less from run to run);
    Consul runs on every CPU, as a Go program uses them."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin or len(cpus) < 2:
        why = "--no-pin" if not pin else f"{len(cpus) or os.cpu_count()} CPU(s)"
        return None, (f"no CPU pinning ({why}): the load generator, the server measured "
                      f"and Consul share {os.cpu_count()} cores")
    tool.cpus = {cpus[0]}
    return {cpus[1]}, (f"CPU pinning: load generator on CPU {cpus[0]}, the replica and the "
                       f"bare Tornado server on CPU {cpus[1]}, Consul on all "
                       f"{len(cpus)} (--no-pin to turn it off)")


def run(args, tool: loadgen.LoadGenerator, stack: ExitStack) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="genisys-bench-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)  # after the processes stop
    run_id = uuid.uuid4().hex[:6]
    prefix = f"bench-{run_id}/"

    server_cpus, pinning = cpu_plan(args.pin, tool)
    consul = ConsulAgent(own=True)
    stack.callback(consul.stop)

    def start_replica(key_prefix: str, env: dict | None = None, settings: dict | None = None,
                      ca_file: str | None = None) -> Replica:
        consul.kv_put_many({  # the computes, as the store writes them
            f"{key_prefix}computes/{compute}": json.dumps(definition, separators=(",", ":"),
                                                          sort_keys=True)
            for compute, definition in compute_definitions().items()})
        replica = Replica(consul.address, key_prefix, settings, env=env, ca_file=ca_file,
                          args=["--log-level", args.replica_log_level], cpus=server_cpus)
        stack.callback(shutil.rmtree, replica.dir, ignore_errors=True)
        stack.callback(replica.stop)
        return replica.start(wait=False)

    replica = start_replica(prefix)
    bare_port = free_port()
    bare_url = f"http://127.0.0.1:{bare_port}"
    bare = ChildProcess("the bare Tornado server",
                        [sys.executable, "-m", "bench.api", "--serve-bare", str(bare_port)],
                        workdir / "bare-tornado.log", cpus=server_cpus).start()
    stack.callback(bare.stop)

    wait_until(ready(replica, lambda: serves_computes(replica.url)), timeout=20,
               what="the replica to serve the 100 computes")
    wait_until(ready(bare, lambda: serves_computes(bare_url)), timeout=20,
               what="the bare Tornado server")
    tls_replica = ca_file = None
    if args.tls:
        tls_dir = workdir / "tls"
        tls_dir.mkdir()
        server = make_certificates(str(tls_dir))["server"]
        ca_file = server.ca_file
        # The same keys, served over HTTPS. It does not lead (the first replica does):
        # with nothing to reconcile, that costs nothing.
        tls_replica = Replica(consul.address, prefix, {"genisys": {
            "tls_cert_file": server.cert_file, "tls_key_file": server.key_file}},
            ca_file=ca_file, args=["--log-level", args.replica_log_level], cpus=server_cpus)
        stack.callback(shutil.rmtree, tls_replica.dir, ignore_errors=True)
        stack.callback(tls_replica.stop)
        tls_replica.start(wait=False)
        wait_until(ready(tls_replica, lambda: serves_computes(tls_replica.url, ca_file)),
                   timeout=20, what="the https replica to serve the 100 computes")
    for path in (f"/compute/{ITEM}", "/compute"):  # "the same JSON", byte for byte
        ours = http_request("GET", replica.url + path)
        theirs = http_request("GET", bare_url + path)
        if ours != theirs:
            print(f"warning: GET {path} differs: Genisys {ours[0]} {len(ours[1])} bytes, "
                  f"bare Tornado {theirs[0]} {len(theirs[1])} bytes", file=sys.stderr)
    try:  # one replica elects itself; wait for it, so every run measures the same thing
        wait_until(replica.leads, timeout=10, what="the replica to lead")
        role = "it leads, so its reconcile loop runs during the bench"
    except AssertionError:
        role = "it does not lead"
    secured = token = None
    if args.auth:
        secured = start_replica(f"auth-{prefix}", env={"GENISYS_BOOTSTRAP_TOKEN": BOOTSTRAP})
        token = read_token(secured)
    consul_version = json.loads(http_request("GET", f"{consul.url}/v1/agent/self")[1])[
        "Config"]["Version"]

    print(f"Consul {consul_version} dev agent on {consul.address}; Genisys replica on "
          f"{replica.url} (python main.py --log-level {args.replica_log_level}; {role}); "
          f"bare Tornado on {bare_url}")
    print(f"{pinning}; {args.duration} s per measurement after {args.warmup} s of warm-up; "
          f"srv CPU: the measured server's CPU time (100% = one core); req/CPU-s: requests per "
          f"second of it; others: CPU used meanwhile by programs outside this bench (above "
          f"~10%, the machine was busy and the row is noisy)")
    print()
    print(HEADER)

    genisys, consul_url = replica.url, consul.url
    post = create_compute(genisys)
    requests = {
        GET_ITEM: (loadgen.Request("GET", f"{genisys}/compute/{ITEM}"), replica.pid),
        BARE_ITEM: (loadgen.Request("GET", f"{bare_url}/compute/{ITEM}"), bare.pid),
        KV_ITEM: (loadgen.Request("GET", f"{consul_url}/v1/kv/{prefix}computes/{ITEM}"),
                  consul.pid),
        GET_LIST: (loadgen.Request("GET", f"{genisys}/compute"), replica.pid),
        BARE_LIST: (loadgen.Request("GET", f"{bare_url}/compute"), bare.pid),
        POST: (post, replica.pid),
    }
    if secured:
        requests[AUTH_ITEM] = (loadgen.Request("GET", f"{secured.url}/compute/{ITEM}",
                                               headers=(("Authorization", f"Bearer {token}"),)),
                               secured.pid)
    if tls_replica:
        requests[TLS_ITEM] = (loadgen.Request("GET", f"{tls_replica.url}/compute/{ITEM}",
                                              ca_file=ca_file), tls_replica.pid)
        requests[HTTP_ITEM] = requests[GET_ITEM]
    # Genisys and bare Tornado in turns (see measure); POST last: it grows the registry
    # that GET /compute lists.
    groups = [(GET_ITEM, *((AUTH_ITEM,) if secured else ()), BARE_ITEM),
              *([(HTTP_ITEM, TLS_ITEM)] if tls_replica else []),
              (KV_ITEM,), (GET_LIST, BARE_LIST), (POST,)]
    only = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    meter = CpuMeter([replica.pid, bare.pid, consul.pid,
                      *([tls_replica.pid] if tls_replica else []),
                      *([secured.pid] if secured else [])])
    rows: dict[tuple[str, int], Row] = {}
    for group in groups:
        labels = [label for label in group
                  if not only or any(w in label.lower() for w in only)]
        for connections in args.connections if labels else ():
            for row in measure(tool, labels, requests, connections, args, run_id, meter):
                rows[row.label, connections] = row
            replica.check()
            bare.check()
            if secured:
                secured.check()

    if any(label == POST for label, _ in rows):
        registry = consul.kv_keys(f"{prefix}computes/")
        created = sum(rows[POST, c].result.requests - rows[POST, c].result.non2xx
                      for c in args.connections)
        print(f"\nregistry after the POSTs: {len(registry)} computes in Consul "
              f"({COMPUTE_COUNT} seeded, {created} created in the measured runs, the rest in "
              f"the warm-ups)")
    report(rows, args)
    print(f"\nbench took {time.monotonic() - started:.0f} s")
    return 0


def read_token(replica: Replica) -> str:
    """A `read` token made with the bootstrap token, once the replica serves its computes."""
    admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
    wait_until(ready(replica, lambda: serves_computes(replica.url, headers=admin)), timeout=20,
               what="the replica with authentication to serve its computes")
    status, body = http_request("POST", f"{replica.url}/token",
                                b'{"name":"bench","role":"read"}', headers=admin)
    assert status == 201, f"POST /token answered {status}: {body[:200]!r}"
    return json.loads(body)["secret"]


def report(rows: dict, args) -> None:
    print()
    for connections in args.connections:
        plain, token = rows.get((GET_ITEM, connections)), rows.get((AUTH_ITEM, connections))
        if plain and token:
            print(f"authentication, {connections} conn: GET /compute/<name> with a token "
                  f"{token.result.rps:,.0f} req/s = {ratio(token.result.rps, plain.result.rps)} "
                  f"of without ({plain.result.rps:,.0f}); p50 {token.result.p50_ms:.2f} ms "
                  f"vs {plain.result.p50_ms:.2f} ms")
    for connections in args.connections:
        ours, bare, kv = (rows.get((label, connections))
                          for label in (GET_ITEM, BARE_ITEM, KV_ITEM))
        if not ours or not (bare or kv):
            continue
        line = f"GET /compute/<name>, {connections} conn: Genisys {ours.result.rps:,.0f} req/s"
        if bare:
            line += (f" = {ratio(ours.result.rps, bare.result.rps)} of bare Tornado "
                     f"({bare.result.rps:,.0f})")
        if kv:
            line += (f", {ratio(ours.result.rps, kv.result.rps)} of Consul KV "
                     f"({kv.result.rps:,.0f})")
        if bare and ours.per_cpu_second and bare.per_cpu_second:
            line += (f"; per CPU-second {ratio(ours.per_cpu_second, bare.per_cpu_second)} "
                     f"of bare Tornado")
        print(line)
    for connections in args.connections:
        tls, http = rows.get((TLS_ITEM, connections)), rows.get((HTTP_ITEM, connections))
        if tls and http:
            line = (f"TLS, GET /compute/<name>, {connections} conn: https {tls.result.rps:,.0f} "
                    f"req/s = {ratio(tls.result.rps, http.result.rps)} of http "
                    f"({http.result.rps:,.0f})")
            if tls.per_cpu_second and http.per_cpu_second:
                line += (f"; per CPU-second {ratio(tls.per_cpu_second, http.per_cpu_second)} "
                         f"of http")
            print(line)
    target_conns = 16 if 16 in args.connections else max(args.connections)
    ours, bare = rows.get((GET_ITEM, target_conns)), rows.get((BARE_ITEM, target_conns))
    if ours:
        note = "" if target_conns == 16 else " (16 was not measured; the targets are set at 16)"
        print(f"\ntargets, Genisys GET /compute/<name> at {target_conns} connections{note}:")
        if bare:
            share = ours.result.rps / bare.result.rps if bare.result.rps else 0.0
            print(f"  throughput >= {TARGET_SHARE_OF_BARE:.0%} of bare Tornado: "
                  f"{'MET' if share >= TARGET_SHARE_OF_BARE else 'NOT MET'} ({share:.0%})")
        p99_ok = ours.result.p99_ms < TARGET_P99_MS
        print(f"  p99 < {TARGET_P99_MS:g} ms: {'MET' if p99_ok else 'NOT MET'} "
              f"({ours.result.p99_ms:.2f} ms)")
        busy = [row for row in (ours, bare) if row and row.others and row.others > BUSY]
        if busy:
            print(f"  note: other programs used {max(r.others for r in busy):.0%} of a core "
                  f"during these rows; on a busy machine the ratio and p99 are noisy: "
                  f"run again when it is quiet")
    for (label, c), row in rows.items():
        r = row.result
        if r.non2xx or r.socket_errors:
            print(f"  warning: {label} at {c} conn: {r.non2xx} non-2xx, "
                  f"{r.socket_errors} socket errors")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.0%}" if b else "-"


if __name__ == "__main__":
    sys.exit(main())
