"""Engine bench: the figures of issue 9's table, each beside its target, in one run.

    python -m bench.engine [--quick] [--services 10000,100000] [--stored 100,10000]
                           [--bulk 100000] [--requests 100] [--only latency,hang,...]
                           (or: make bench-engine)

Everything runs on loopback against one Consul dev agent of its own; figures only, never
an assertion. Parts (--only names them):

latency     3 replicas, one counting connector (latency 0). POST /service/<s>/scale to a
            follower, timed until the connector's backend receives the order (its order
            log): with no other service, then with --services other services (their totals
            written straight into Consul, 64 per transaction; the leader places them and
            they converge first). The ratio of each p50 to the row above. Meanwhile, the
            full cycles the leader ran per 1,000 scale requests (from /metrics when it
            counts them), and at the end the leader's and a follower's peak RSS.
hang        one replica, two computes: a healthy counting connector, and one that accepts
            connections and never answers (tests/faulty_connector.py --fault slow, one hour)
            holding a service. The healthy compute's scale latency.
throughput  one replica; POST /compute with --stored computes already stored, then POST
            /service/<new>/scale with --stored services stored, 16 connections
            (bench/loadgen.py: wrk when installed); the last size as a % of the first.
bulk        one replica, two counting connectors (strategy spread): --bulk desired totals
            written at once straight into Consul; time until both connectors run every
            count, then the duration of the next full cycle (from the leader's log).
late        one replica; a backend that takes 1.6 x connector.timeout to scale (8 s with
            the default 5 s): the time from its completion until GET /service/<s> shows
            the count.

A step that does not finish in time prints "did not converge within X s" and the bench
goes on; every process is stopped at the end, also on Ctrl-C. The machine is shared:
each part prints the CPU that other programs used meanwhile. --quick (1,000 services,
short timeouts) runs in about a minute, for development.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench import loadgen
from bench.api import create_compute
from bench.proc import OtherLoad, memory_mb
from bench.reconcile import scale_through
from genisys.config import ConsulSection
from tests.connector_helpers import CountingConnector
from tests.faulty_connector import FaultyProcess
from tests.support import (ConsulAgent, Replica, TimedOut, percentile, the_leader,
                           unique_prefix, wait_until)

LATENCY_P50, LATENCY_P99 = 15.0, 50.0           # ms, no other service
LOADED_P50, LOADED_P99 = 20.0, 60.0             # ms, with 10,000 and 100,000 others
HANG_P50 = 25.0                                 # ms
THROUGHPUT, THROUGHPUT_SHARE = 1000.0, 0.80     # req/s at 16 connections; last / first
BULK_SECONDS, FULL_CYCLE_SECONDS = 60.0, 2.5
RSS_MB = 300.0
JOURNAL_TRIMMED = 120.0                         # s to wait for the journal's trim
LATE_FACTOR = 2.0                               # x connector.timeout
LATE_BACKEND = 1.6                              # the backend's scale time, x the timeout
CONNECTIONS = 16
PARTS = ("latency", "hang", "throughput", "bulk", "late")


@dataclass
class Row:
    figure: str
    measured: str
    target: str
    met: bool | None  # None: not measured


@dataclass
class Bench:
    args: argparse.Namespace
    consul: ConsulAgent
    workdir: Path
    stack: ExitStack
    rows: list[Row] = field(default_factory=list)

    def row(self, figure: str, measured: str, target: str, met: bool | None) -> None:
        self.rows.append(Row(figure, measured, target, met))
        print(f"  {figure}: {measured}  [target {target}: {verdict(met)}]", flush=True)

    def replicas(self, count: int, prefix: str, settings: dict) -> list[Replica]:
        # The shipped consul.timeout, not the tests' 2s (tests/support.py).
        settings = {**settings, "consul": {"timeout": f"{ConsulSection.timeout:g}s"}}
        started = []
        for _ in range(count):
            replica = Replica(self.consul.address, prefix, settings)
            self.stack.callback(shutil.rmtree, replica.dir, ignore_errors=True)
            self.stack.callback(stop_quietly, replica)
            started.append(replica.start(wait=False))
        for replica in started:
            wait_until(replica.serving, 30, f"replica {replica.url} to serve")
        return started

    def counting(self, name: str, *args: str) -> CountingConnector:
        connector = CountingConnector(*args, log_path=self.workdir / f"{name}.log")
        self.stack.callback(stop_quietly, connector)
        return connector


def stop_quietly(process) -> None:
    try:
        process.stop()
    except AssertionError as exc:  # killed after its grace period: say so, stop the rest
        print(f"warning: {str(exc)[:300]}", file=sys.stderr)


def not_converged(exc: TimedOut) -> str:
    return f"{exc.what}: did not converge within {exc.timeout:g} s"


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else "meets" if met else "MISSES"


def add_compute(replica: Replica, name: str, url: str) -> None:
    response = replica.request("POST", "/compute", {"name": name, "connector": url})
    if response.status_code != 201:
        raise AssertionError(f"POST /compute {name} answered {response.status_code}: "
                             f"{response.text[:200]}")


def put_totals(bench: Bench, prefix: str, totals: dict[str, int]) -> None:
    """Desired totals written straight into Consul, as a bulk import would."""
    bench.consul.kv_put_many({f"{prefix}resources/{s}": str(n) for s, n in totals.items()})


def wait_running(bench: Bench, connectors: list[CountingConnector], totals: dict[str, int],
                 what: str) -> None:
    """Wait until every service of `totals` runs its total, summed over the connectors;
    TimedOut says how many did. Polled less often as they grow: a connector answers
    GET /status with every count, which costs it CPU the replicas need."""
    running = 0

    def all_running() -> bool:
        nonlocal running
        counts = [c.counts() for c in connectors]
        running = sum(1 for s, n in totals.items() if sum(c.get(s, 0) for c in counts) == n)
        return running == len(totals)

    try:
        wait_until(all_running, bench.args.converge_timeout, what,
                   interval=max(0.5, len(totals) / 20000))
    except TimedOut as exc:
        raise TimedOut(exc.timeout, f"{what} ({running:,} of {len(totals):,} did)") from None


def ms(values: list[float]) -> str:
    return (f"p50 {percentile(values, 0.5):.1f} ms, p99 {percentile(values, 0.99):.1f} ms "
            f"({len(values)} orders)")


def load_note(load: OtherLoad) -> str:
    return f"other programs used {load.cpus():.1f} CPUs meanwhile"


# -- scrape /metrics and the leader's log --------------------------------------------------

def metrics(replica: Replica) -> dict[str, float]:
    """Prometheus text of GET /metrics: {'name{labels}': value}."""
    samples = {}
    for line in replica.request("GET", "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def cycle_counters(before: dict, after: dict) -> dict[str, float]:
    """What the counters of full cycles and requeues grew by, per label set."""
    return {key: after[key] - before.get(key, 0.0) for key in after
            if re.search(r"full|requeue", key.split("{")[0])
            and key.split("{")[0].endswith("_total")}


# The leader's line after each full cycle ("full cycle: ..." before engine v2, "full pass
# (reason): ..." since), with its duration.
FULL_CYCLE = re.compile(r"full (?:cycle|pass)[^:\n]*: (.*) \((\d+) ms\)")


# -- latency: follower -> connector with 0, 10,000 and 100,000 other services ---------------

def latency_part(bench: Bench) -> None:
    args = bench.args
    print(f"\nlatency: POST /service/<s>/scale to a follower until the connector receives "
          f"the order; 3 replicas (poll_interval {args.poll_interval}), one counting "
          f"connector", flush=True)
    prefix = unique_prefix()
    connector = bench.counting("latency")
    replicas = bench.replicas(3, prefix, {"connector": {"poll_interval": args.poll_interval}})
    add_compute(replicas[0], "local", connector.url)
    leader = the_leader(replicas)
    followers = [r for r in replicas if r is not leader]
    session = requests.Session()

    def one(service: str, number: int, replica: Replica) -> float | None:
        times = scale_through(session, replica, connector, service, number, args.order_timeout)
        return None if times is None else 1000 * (times[2] - times[0])

    def measure_row(label: str, count: int) -> list[float]:
        samples, lost, deadline = [], 0, time.monotonic() + args.row_seconds
        for i in range(count):
            if time.monotonic() > deadline:
                print(f"    stopped after {i} requests: the row's {args.row_seconds:g} s "
                      f"are up")
                break
            sample = one(f"{label}-{i:04d}", 1 + i % 3, followers[i % 2])
            if sample is None:
                lost += 1
            else:
                samples.append(sample)
        if lost:
            print(f"    {lost} orders did not reach the connector within "
                  f"{args.order_timeout:g} s")
        return samples

    for i in range(5):  # warm-up: connections, the leader's first cycles
        one(f"warm-{i}", 1, followers[i % 2])
    load = OtherLoad([bench.consul.pid, connector.pid, *(r.pid for r in replicas)])
    before, cycles_logged, window = metrics(leader), len(FULL_CYCLE.findall(leader.log())), \
        time.monotonic()
    samples = measure_row("lat0", args.requests)
    window = time.monotonic() - window
    after = metrics(leader)
    cycles_logged = len(FULL_CYCLE.findall(leader.log())) - cycles_logged
    if samples:
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        bench.row("scale latency follower -> connector, no other service",
                  f"{ms(samples)}; {load_note(load)}",
                  f"p50 <= {LATENCY_P50:g} ms, p99 <= {LATENCY_P99:g} ms",
                  p50 <= LATENCY_P50 and p99 <= LATENCY_P99)
    wasted_cycles(bench, before, after, cycles_logged, len(samples), window)

    previous, background, stuck = (percentile(samples, 0.5) if samples else None), {}, None
    for others in args.services:
        label = f"scale latency with {others:,} other services"
        if stuck:  # every row of the table is printed, measured or not
            bench.row(label, f"not measured: {stuck}", f"p50 <= {LOADED_P50:g} ms", None)
            continue
        try:
            more = {f"bg-{i:06d}": 1 for i in range(len(background), others)}
            background.update(more)
            started = time.monotonic()
            put_totals(bench, prefix, more)
            wait_running(bench, [connector], background,
                         f"{others:,} other services to run on the connector")
            print(f"    {others:,} other services written and running after "
                  f"{time.monotonic() - started:.1f} s", flush=True)
        except TimedOut as exc:
            stuck = not_converged(exc)
            bench.row(label, stuck, f"p50 <= {LOADED_P50:g} ms", None)
            continue
        load = OtherLoad([bench.consul.pid, connector.pid, *(r.pid for r in replicas)])
        samples = measure_row(f"lat{others}", args.background_requests)
        if not samples:
            bench.row(label, "no order reached the connector", f"p50 <= {LOADED_P50:g} ms",
                      False)
            continue
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        ratio = f"; {p50 / previous:.2f} x the row above" if previous else ""
        bench.row(f"{label}, right after they converged",
                  f"{ms(samples)}{ratio}; {load_note(load)}",
                  f"p50 <= {LOADED_P50:g} ms, p99 <= {LOADED_P99:g} ms",
                  p50 <= LOADED_P50 and p99 <= LOADED_P99)
        # Their placements left one change journal entry each, read by every answer of
        # the journal's watch until the leader trims them (journal grace, 30 s).
        try:
            wait_until(lambda: len(bench.consul.kv_keys(f"{prefix}changes/")) < 100,
                       JOURNAL_TRIMMED, "the journal trimmed", interval=1.0)
        except TimedOut as exc:
            print(f"    {not_converged(exc)}", flush=True)
            continue
        load = OtherLoad([bench.consul.pid, connector.pid, *(r.pid for r in replicas)])
        samples = measure_row(f"lat{others}t", args.background_requests)
        if samples:
            p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
            bench.row(f"{label}, once the journal is trimmed",
                      f"{ms(samples)}; {load_note(load)}",
                      f"p50 <= {LOADED_P50:g} ms, p99 <= {LOADED_P99:g} ms",
                      p50 <= LOADED_P50 and p99 <= LOADED_P99)
        previous = p50
    peak = {"leader": memory_mb(leader.pid)["VmHWM"],
            "follower": memory_mb(followers[0].pid)["VmHWM"]}
    bench.row(f"peak RSS with {len(background):,} services",
              f"leader {peak['leader']:.0f} MB, follower {peak['follower']:.0f} MB",
              f"<= {RSS_MB:g} MB each", max(peak.values()) <= RSS_MB if background else None)


def wasted_cycles(bench: Bench, before: dict, after: dict, logged: int, requests_sent: int,
                  window: float) -> None:
    figure = "wasted full cycles per 1,000 scale requests"
    periodic = math.ceil(window / parse_seconds(bench.args.poll_interval))
    if not requests_sent:
        bench.row(figure, "no scale request got through", "0", None)
        return
    counters = cycle_counters(before, after)
    inferred = (f"full cycles in the leader's log meanwhile: {logged} in {window:.1f} s, "
                f"of which up to {periodic} periodic (poll_interval "
                f"{bench.args.poll_interval})")
    if not counters:
        cycles = sum(v - before.get(k, 0.0) for k, v in after.items()
                     if k.startswith("genisys_reconcile_total"))
        bench.row(figure, f"counter missing in /metrics (it counts {cycles:g} cycles of any "
                          f"kind meanwhile, genisys_reconcile_total); {inferred}",
                  "0 (counted)", None)
        return
    shown = ", ".join(f"{k} +{v:g}" for k, v in sorted(counters.items()) if v) or \
        "no full cycle or requeue counted"
    full = {k: v for k, v in counters.items() if "full" in k.split("{")[0]}
    wasted = sum(v for k, v in full.items()
                 if not re.search(r'reason="[^"]*(poll|period|interval|timer|start)', k))
    if not any("reason=" in k for k in full):  # no reason given: the periodic ones are not
        wasted = max(0.0, wasted - periodic)
    bench.row(figure, f"{1000 * wasted / requests_sent:.0f} ({shown}; {inferred})", "0",
              wasted == 0)


def parse_seconds(duration: str) -> float:
    return float(duration.rstrip("s"))


# -- hang: a healthy compute beside one that never answers ---------------------------------

def hang_part(bench: Bench) -> None:
    args = bench.args
    print(f"\nhang: a healthy compute's scale latency while another compute accepts "
          f"connections and never answers (connector.timeout {args.connector_timeout})",
          flush=True)
    prefix = unique_prefix()
    healthy = bench.counting("healthy")
    hung = FaultyProcess("slow", bench.workdir / "hung.log", "--delay", "3600")
    bench.stack.callback(hung.stop)
    replica, = bench.replicas(1, prefix, {"connector": {
        "poll_interval": args.poll_interval, "timeout": args.connector_timeout}})
    add_compute(replica, "healthy", healthy.url)
    add_compute(replica, "hung", hung.url)
    wait_until(replica.leads, 30, "the replica to lead")
    response = replica.request("POST", "/service/stuck/scale", {"number": 1, "compute": "hung"})
    print(f"    a service on the hung compute: {response.status_code}")
    load = OtherLoad([bench.consul.pid, healthy.pid, replica.pid])
    samples, deadline = [], time.monotonic() + args.row_seconds
    for i in range(args.hang_requests):
        if time.monotonic() > deadline:
            print(f"    stopped after {i} requests: the row's {args.row_seconds:g} s are up")
            break
        started = time.time()
        service = f"healthy-{i:03d}"
        response = replica.request("POST", f"/service/{service}/scale",
                                   {"number": 1, "compute": "healthy"})
        arrived = response.status_code == 202 and healthy.arrival(
            service, 1, timeout=args.order_timeout)
        if arrived:
            samples.append(1000 * (arrived - started))
        else:
            print(f"    {service}: {response.status_code}, the order did not arrive within "
                  f"{args.order_timeout:g} s")
    figure = "healthy compute's scale latency while another compute hangs"
    if not samples:
        bench.row(figure, "no order reached the healthy compute", f"p50 <= {HANG_P50:g} ms",
                  False)
        return
    bench.row(figure, f"{ms(samples)}; {load_note(load)}", f"p50 <= {HANG_P50:g} ms",
              percentile(samples, 0.5) <= HANG_P50)


# -- throughput: POST /compute and POST /service/<s>/scale, 16 connections --------------------

def throughput_part(bench: Bench) -> None:
    args = bench.args
    tool = loadgen.choose()
    bench.stack.callback(tool.close)
    print(f"\nthroughput: {CONNECTIONS} connections on one replica, {args.duration} s each "
          f"after {args.warmup} s of warm-up; {tool.describe()}", flush=True)
    for what in ("computes", "services"):
        prefix = unique_prefix()
        connector = bench.counting(f"throughput-{what}")
        replica, = bench.replicas(1, prefix, {"connector": {"poll_interval": "60s"}})
        add_compute(replica, "local", connector.url)
        wait_until(replica.leads, 30, "the replica to lead")
        first, stored, stuck = None, 0, None
        for size in args.stored:
            label = (f"POST /compute with {size:,} computes stored" if what == "computes"
                     else f"POST /service/<s>/scale with {size:,} services stored")
            if stuck:
                bench.row(label, f"not measured: {stuck}", f">= {THROUGHPUT:g} req/s", None)
                continue
            try:
                stored = store(bench, replica, connector, prefix, what, stored, size)
            except TimedOut as exc:
                stuck = not_converged(exc)
                bench.row(label, stuck, f">= {THROUGHPUT:g} req/s", None)
                continue
            load = OtherLoad([bench.consul.pid, connector.pid, replica.pid])
            result = post_load(tool, replica, what, args, f"{what[0]}{size}")
            share = f"; {result.rps / first:.0%} of the first row" if first else ""
            errors = (f"; {result.non2xx} non-2xx, {result.socket_errors} socket errors"
                      if result.non2xx or result.socket_errors else "")
            met = result.rps >= THROUGHPUT and (not first or result.rps / first
                                                >= THROUGHPUT_SHARE)
            bench.row(label, f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 "
                             f"{result.p99_ms:.1f} ms{share}{errors}; {load_note(load)}",
                      f">= {THROUGHPUT:g} req/s" + (f", >= {THROUGHPUT_SHARE:.0%} of the "
                                                     f"first row" if first else ""), met)
            first = first or result.rps
        stop_quietly(replica)


def store(bench: Bench, replica: Replica, connector: CountingConnector, prefix: str, what: str,
          stored: int, size: int) -> int:
    """Grow the stored computes or services from `stored` to `size`."""
    if what == "computes":  # as the store writes them; nothing listens on port 9
        bench.consul.kv_put_many({
            f"{prefix}computes/c{i:06d}": json.dumps(
                {"connector": f"http://127.0.0.1:9/c{i:06d}", "name": f"c{i:06d}"},
                separators=(",", ":"), sort_keys=True) for i in range(stored, size)})
        wait_until(lambda: len(replica.request("GET", "/compute").json()) >= size + 1,
                   bench.args.converge_timeout, f"the replica to list {size:,} computes")
    else:
        totals = {f"s{i:06d}": 1 for i in range(size)}
        put_totals(bench, prefix, {s: 1 for s in list(totals)[stored:]})
        wait_running(bench, [connector], totals, f"{size:,} services to run")
    return size


def post_load(tool: loadgen.LoadGenerator, replica: Replica, what: str, args,
              tag: str) -> loadgen.Result:
    if what == "computes":
        request = create_compute(replica.url)
    else:
        request = loadgen.Request(
            "POST", f"{replica.url}/service/new/scale",
            unique_body=lambda t, n: b'{"number":1}', lua_body="""'{"number":1}'""",
            unique_path=lambda t, n: f"/service/{t}-{n}/scale",
            lua_path="""'/service/' .. tag .. '-' .. n .. '/scale'""")
    if args.warmup:
        tool.run(request, CONNECTIONS, args.warmup, f"{tag}w")
    return tool.run(request, CONNECTIONS, args.duration, f"{tag}m")


# -- bulk: many desired totals written at once -----------------------------------------------

def bulk_part(bench: Bench) -> None:
    args = bench.args
    count = args.bulk
    print(f"\nbulk: {count:,} desired totals written at once straight into Consul; one "
          f"replica, two counting connectors, strategy spread (poll_interval "
          f"{args.poll_interval})", flush=True)
    prefix = unique_prefix()
    connectors = [bench.counting(f"bulk-{i}") for i in range(2)]
    replica, = bench.replicas(1, prefix, {"connector": {"poll_interval": args.poll_interval},
                                          "placement": {"strategy": "spread"}})
    for i, connector in enumerate(connectors):
        add_compute(replica, f"c{i}", connector.url)
    wait_until(replica.leads, 30, "the replica to lead")
    totals = {f"svc-{i:06d}": 1 + i % 3 for i in range(count)}
    load = OtherLoad([bench.consul.pid, replica.pid, *(c.pid for c in connectors)])
    started = time.monotonic()
    put_totals(bench, prefix, totals)
    written = time.monotonic() - started
    figure = f"{count:,} desired totals written at once: until every connector runs its count"
    try:
        wait_running(bench, connectors, totals, f"{count:,} services to run")
    except TimedOut as exc:
        bench.row(figure, not_converged(exc), f"<= {BULK_SECONDS:g} s", False)
        bench.row(f"next full cycle over {count:,} services (bulk status)",
                  "not measured: they did not converge", f"<= {FULL_CYCLE_SECONDS:g} s", None)
        return
    converged = time.monotonic() - started
    bench.row(figure, f"{converged:.1f} s (written in {written:.1f} s); {load_note(load)}",
              f"<= {BULK_SECONDS:g} s", converged <= BULK_SECONDS)
    seen = len(replica.log())
    figure = f"next full cycle over {count:,} services (bulk status)"
    limit = parse_seconds(args.poll_interval) + args.converge_timeout
    try:
        took = wait_until(lambda: FULL_CYCLE.search(replica.log()[seen:]), limit,
                          "a full cycle in the leader's log", interval=0.25)
    except TimedOut as exc:
        bench.row(figure, not_converged(exc), f"<= {FULL_CYCLE_SECONDS:g} s", None)
        return
    seconds = int(took[2]) / 1000
    # Engine v2 observes each compute in its own worker, beside the pass: /health shows
    # each worker's last full observation (the bulk status call and what follows).
    observations = {name: seen["seconds"] for name, seen in (
        (replica.health().get("last_cycle") or {}).get("computes") or {}).items() if seen}
    longest = max([seconds, *observations.values()])
    shown = "".join(f", full observation of {name} {observed:.2f} s"
                    for name, observed in sorted(observations.items()))
    bench.row(figure, f"pass {seconds:.2f} s ({took[1]}){shown}",
              f"<= {FULL_CYCLE_SECONDS:g} s", longest <= FULL_CYCLE_SECONDS)


# -- late: an order that outlives connector.timeout -------------------------------------------

def late_part(bench: Bench) -> None:
    args = bench.args
    timeout = parse_seconds(args.connector_timeout)
    backend = LATE_BACKEND * timeout
    print(f"\nlate order: a backend that takes {backend:g} s to scale, connector.timeout "
          f"{timeout:g} s, poll_interval {args.poll_interval}", flush=True)
    prefix = unique_prefix()
    connector = bench.counting("late", "--latency", "0", "--scale-latency", str(backend))
    replica, = bench.replicas(1, prefix, {"connector": {
        "poll_interval": args.poll_interval, "timeout": args.connector_timeout}})
    add_compute(replica, "local", connector.url)
    wait_until(replica.leads, 30, "the replica to lead")
    poll = parse_seconds(args.poll_interval)
    # The worst case for a leader that looks again only at its next full cycle: the order
    # completes just after one. Full cycles come every poll_interval after the last.
    seen = len(replica.log())
    if wait_until(lambda: FULL_CYCLE.search(replica.log()[seen:]), poll + 30,
                  "a full cycle in the leader's log", interval=0.05):
        time.sleep(max(0.0, poll - backend + 0.5))
    response = replica.request("POST", "/service/late/scale", {"number": 3})
    figure = f"late order (backend {backend:g} s): from its completion until the status shows it"
    target = f"<= {LATE_FACTOR:g} x connector.timeout = {LATE_FACTOR * timeout:g} s"
    done = response.status_code == 202 and connector.completion(
        "late", 3, timeout=backend + args.order_timeout)
    if not done:
        bench.row(figure, f"the order was not carried out ({response.status_code})", target,
                  None)
        return
    meanwhile = {}

    def shown() -> bool:
        record = replica.request("GET", "/service/late").json()
        if record.get("observed", {}).get("local") == 3:
            return True
        meanwhile.update(record)
        return False

    limit = 2 * parse_seconds(args.poll_interval) + timeout
    try:
        wait_until(shown, limit, "the status to show the count")
    except TimedOut as exc:
        bench.row(figure, not_converged(exc), target, False)
        return
    seconds = time.time() - done
    said = {k: meanwhile[k] for k in ("observed", "errors", "in_progress", "target")
            if meanwhile.get(k)}
    bench.row(figure, f"{seconds:.1f} s" + (f" (before, the status said "
                                            f"{json.dumps(said)[:200]})" if said else ""),
              target, seconds <= LATE_FACTOR * timeout)


# -- main ---------------------------------------------------------------------------------------

def print_table(bench: Bench, started: float) -> None:
    average = os.getloadavg()
    print(f"\nissue 9's table, measured in this run ({time.monotonic() - started:.0f} s; load "
          f"average now {average[0]:.2f} {average[1]:.2f} {average[2]:.2f} on "
          f"{os.cpu_count()} CPUs; each row notes the CPU other programs used):\n")
    print("| figure | measured | target | |")
    print("|---|---|---|---|")
    for row in bench.rows:
        print(f"| {row.figure} | {row.measured} | {row.target} | {verdict(row.met)} |")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = lambda text: [int(n) for n in text.split(",") if n]  # noqa: E731
    parser.add_argument("--quick", action="store_true",
                        help="1,000 services, short timeouts: about a minute")
    parser.add_argument("--services", type=sizes, default=[10000, 100000],
                        help="other services for the latency rows (10000,100000)")
    parser.add_argument("--stored", type=sizes, default=[100, 10000],
                        help="computes / services stored for the throughput rows (100,10000)")
    parser.add_argument("--bulk", type=int, default=100000, help="totals written at once")
    parser.add_argument("--requests", type=int, default=100,
                        help="scale requests with no other service (100)")
    parser.add_argument("--background-requests", type=int, default=30,
                        help="scale requests per row with other services (30)")
    parser.add_argument("--hang-requests", type=int, default=20)
    parser.add_argument("--duration", type=int, default=5, help="seconds per throughput row")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before it")
    parser.add_argument("--poll-interval", default="15s", help="connector.poll_interval")
    parser.add_argument("--connector-timeout", default="5s", help="connector.timeout")
    parser.add_argument("--converge-timeout", type=float, default=300.0,
                        help="seconds a step may take to converge (300)")
    parser.add_argument("--order-timeout", type=float, default=30.0,
                        help="seconds an order may take to reach its connector (30)")
    parser.add_argument("--row-seconds", type=float, default=120.0,
                        help="a latency row stops sending after this many seconds (120)")
    parser.add_argument("--only", type=lambda t: [p for p in t.split(",") if p],
                        default=list(PARTS), help=f"parts to run, of {','.join(PARTS)}")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part {', '.join(sorted(unknown))}; "
                     f"the parts are {', '.join(PARTS)}")
    if args.quick:
        args.services, args.stored, args.bulk = [1000], [100, 1000], 1000
        args.requests, args.background_requests, args.hang_requests = 20, 10, 3
        args.duration, args.warmup = 1, 0
        args.poll_interval, args.connector_timeout = "3s", "1s"
        args.converge_timeout, args.order_timeout, args.row_seconds = 30.0, 10.0, 15.0
    return args


def interrupted(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the bench as Ctrl-C does: processes stopped


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    average = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {average[0]:.2f} {average[1]:.2f} "
          f"{average[2]:.2f} before the run (other programs make the figures noisy)",
          flush=True)
    parts = {"latency": latency_part, "hang": hang_part, "throughput": throughput_part,
             "bulk": bulk_part, "late": late_part}
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="bench-engine-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        consul = ConsulAgent(own=True)
        stack.callback(consul.stop)
        bench = Bench(args, consul, workdir, stack)
        try:
            for name in PARTS:
                if name in args.only:
                    with ExitStack() as part:  # each part stops its own processes
                        bench.stack = part
                        began = time.monotonic()
                        part.callback(lambda: print(f"  ({name}: {time.monotonic() - began:.0f}"
                                                    f" s)", flush=True))
                        try:
                            parts[name](bench)
                        except TimedOut as exc:  # the next part may work
                            print(f"  {name}: {not_converged(exc)}", flush=True)
                        except (AssertionError, OSError, requests.RequestException) as exc:
                            print(f"  {name} failed: {str(exc)[:2000]}", flush=True)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every process", file=sys.stderr)
            return 130
        print_table(bench, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
