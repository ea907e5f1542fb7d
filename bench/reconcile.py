"""Reconciler bench: observe cost, scale latency through a follower, leader memory.

    python -m bench.reconcile [--services 1000] [--latency 0.05] [--rounds 3]
                              [--concurrency 16,32,64,128] [--requests 200]
                              [--background 1000] [--memory-services 10000]
                              [--skip observe,latency,nohistory,memory]

Three parts, everything on loopback, figures only (no assertions):

1. observe: the leader's observation (genisys.engine.calls) called in-process (no store
   started: observe does not touch Consul) for --services services on 3 counting
   connectors (bench/counting_connector.py) whose every call waits --latency:
   (a) connectors started with --no-bulk, so one GET /service/<s>/status per (service,
   compute), at several connector.concurrency values; (b) the bulk GET /status
   extension. The leader's own CPU per cycle is printed beside the wall time: on this
   machine the three connectors share the CPUs with it, as they would not in production.
2. latency: a Consul dev agent, 3 replicas (`python main.py`, poll_interval 15s), one
   counting connector (latency 0) as the only compute; POST /service/<s>/scale to a
   follower, timed until the connector's backend receives the order (--order-log).
   Then again (--background-requests) once --background other services are managed:
   every replica re-reads whole KV prefixes on each change, so the latency grows with
   the number of services. Part 2 runs twice in the same run, first with the order
   history switched off (GENISYS_BENCH_NO_HISTORY=1, a switch only this bench uses), then
   as shipped, so that the history's cost shows beside its baseline (--skip nohistory:
   once).
3. memory: one replica leads, --memory-services desired totals are written straight
   into Consul's KV (transactions of 64), the leader places them and sends one scale
   order each to a bulk counting connector; prints the time to converge and the
   leader's VmHWM (peak RSS) from /proc.

Targets: (a) <= 2 s, (b) <= 0.2 s; scale latency p50 <= 25 ms, p99 <= 100 ms;
leader peak RSS < 150 MB with 10,000 services. About 2 minutes on 2 CPUs. Every part
also prints the CPU used by other programs or the load average: on a shared machine the
wall times move a lot, the CPU costs much less.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

from bench.proc import OtherLoad, cpu_seconds, machine_busy, memory_mb, own_cpu
from genisys.connector import ConnectorClient
from genisys.engine.calls import ComputeCalls
from genisys.metrics import ReplicaMetrics
from genisys.plan import Observed
from tests.connector_helpers import CountingConnector
from tests.support import ConsulAgent, Replica, percentile, the_leader, unique_prefix, wait_until

DEFAULT_CONCURRENCY = 64   # genisys.config.ConnectorSection.concurrency
CLIENT_POOL = 256          # the connection pool of this bench's own ConnectorClient
TARGET_PER_SERVICE = 2.0
TARGET_BULK = 0.2
TARGET_P50_MS, TARGET_P99_MS = 25.0, 100.0
TARGET_RSS_MB = 150.0


# -- measurements -----------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


# -- 1. observe ----------------------------------------------------------------------

def service_names(count: int) -> list[str]:
    return [f"svc-{i:05d}" for i in range(count)]


async def populate(client: ConnectorClient, urls: list[str], names: list[str]) -> dict:
    """Give every service a count on every connector (scale orders, 256 at a time)."""
    limit = asyncio.Semaphore(256)
    expected = {}

    async def one(url, compute, index, name):
        number = (index + int(compute[1:])) % 4
        async with limit:
            await client.scale(url, name, number, None)
        expected[name, compute] = number

    await asyncio.gather(*(one(url, f"c{c}", i, name) for c, url in enumerate(urls)
                           for i, name in enumerate(names)))
    return expected


def sequential_estimate(client_urls: list[str], names: list[str]) -> float:
    """The 2015 loop: one status call after another; seconds per service, 3 computes."""
    session = requests.Session()
    sample = names[:20]
    started = time.perf_counter()
    for name in sample:
        for url in client_urls:
            session.get(f"{url}/service/{name}/status", timeout=5).raise_for_status()
    return (time.perf_counter() - started) / len(sample)


async def time_observe(reconciler: list[ComputeCalls], computes: dict, services: set,
                       rounds: int, expected: dict, pids: list[int]) -> list[dict]:
    runs = []
    for _ in range(rounds):
        me, others, busy = own_cpu(), sum(map(cpu_seconds, pids)), machine_busy()
        started = time.perf_counter()
        observed = await observe_all(reconciler, services)
        wall = time.perf_counter() - started
        me, others = own_cpu() - me, sum(map(cpu_seconds, pids)) - others
        wrong = sum(1 for key, n in expected.items() if observed.counts.get(key) != n)
        runs.append({"wall": wall, "leader_cpu": me, "connectors_cpu": others,
                     "elsewhere_cpu": max(0.0, machine_busy() - busy - me - others),
                     "errors": len(observed.errors), "wrong": wrong})
    return runs


def describe_runs(label: str, runs: list[dict], calls: int) -> str:
    walls = [r["wall"] for r in runs]
    leader = statistics.median(r["leader_cpu"] for r in runs)
    bad = sum(r["errors"] + r["wrong"] for r in runs)
    return (f"  {label:<36} min {min(walls):6.3f}s  median {statistics.median(walls):6.3f}s"
            f"   leader CPU {leader:5.2f}s ({1e6 * leader / calls:4.0f} us/call)"
            f"  connectors CPU {statistics.median(r['connectors_cpu'] for r in runs):4.2f}s"
            f"  other programs {statistics.median(r['elsewhere_cpu'] for r in runs):4.2f}s"
            + (f"  [{bad} errors or wrong counts!]" if bad else ""))


async def observe_part(args, workdir: Path) -> dict:
    names = service_names(args.services)
    services = set(names)
    concurrencies = sorted(set(args.concurrency) | {DEFAULT_CONCURRENCY})
    results = {}
    print(f"1. observe: {args.services} services x 3 computes, {args.latency * 1000:g} ms per "
          f"connector call, {args.rounds} rounds each (each compute's calls in this process)")
    for mode in ("per-service", "bulk"):
        flags = ["--latency", str(args.latency)] + (["--no-bulk"] if mode == "per-service" else [])
        connectors = [CountingConnector(*flags, log_path=workdir / f"{mode}-{i}.log")
                       for i in range(3)]
        client = None
        try:
            urls = [c.url for c in connectors]
            pids = [c.process.pid for c in connectors]
            computes = {f"c{i}": url for i, url in enumerate(urls)}
            client = ConnectorClient(timeout=5.0)  # as cli.py builds it: 256 connections
            expected = await populate(client, urls, names)
            if mode == "per-service":
                per_service = sequential_estimate(urls, names)
                print(f"  one call after another (the 2015 loop), measured on 20 services: "
                      f"{per_service * 1000:.0f} ms per service -> "
                      f"{per_service * args.services:.0f} s for {args.services}")
                print(f"  (a) GET /service/<s>/status per (service, compute); connectors "
                      f"answer 404 to GET /status. floor = ceil(services / concurrency) x "
                      f"latency; the client's {CLIENT_POOL} connections, shared by the 3 "
                      f"computes, cap concurrency at {CLIENT_POOL // 3}:")
                for concurrency in concurrencies:
                    reconciler = make_calls(client, computes, concurrency)
                    await observe_all(reconciler, services)  # warm connections
                    runs = await time_observe(reconciler, computes, services, args.rounds,
                                              expected, pids)
                    in_flight = min(3 * concurrency, CLIENT_POOL)
                    floor = -(-args.services // (in_flight // 3)) * args.latency
                    print(describe_runs(f"concurrency {concurrency:>3} (floor {floor:4.2f}s)", runs,
                                        3 * args.services + 3), flush=True)
                    results["a", concurrency] = runs
            else:
                print("  (b) bulk GET /status, one call per compute:")
                reconciler = make_calls(client, computes, DEFAULT_CONCURRENCY)
                await observe_all(reconciler, services)
                runs = await time_observe(reconciler, computes, services,
                                          max(args.rounds, 10), expected, pids)
                print(describe_runs("bulk", runs, 3), flush=True)
                results["b"] = runs
        finally:
            if client:
                client.close()
            for connector in connectors:
                connector.stop()
    return results


def make_calls(client: ConnectorClient, computes: dict,
               concurrency: int) -> list[ComputeCalls]:
    """Each compute's calls, as the leader's workers make them."""
    metrics = ReplicaMetrics()
    return [ComputeCalls(client, name, url, None, concurrency, metrics)
            for name, url in computes.items()]


async def observe_all(calls: list[ComputeCalls], services: set) -> Observed:
    """Every compute observed at once, as the workers do it."""
    observed = Observed()
    for one, seen in zip(calls, await asyncio.gather(*(c.observe(services, True)
                                                       for c in calls))):
        observed.counts.update(((s, one.compute), n) for s, n in seen.counts.items())
        observed.errors.update(((s, one.compute), e) for s, e in seen.errors.items())
    return observed


# -- 2. scale latency through a follower ---------------------------------------------

def leader_decisions(log_text: str) -> dict[tuple[str, int], float]:
    """When the leader logged `scaling <svc> on <c> from <n> to <m>` (ms resolution)."""
    found = {}
    pattern = re.compile(r"^(\S+ \S+),(\d{3}) INFO genisys\.engine\.workers: scaling (\S+) "
                         r"on \S+ from \d+ to (\d+)", re.MULTILINE)
    for match in pattern.finditer(log_text):
        stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(match[2]) / 1000
        found.setdefault((match[3], int(match[4])), stamp)
    return found


def scale_through(session: requests.Session, replica: Replica, connector: CountingConnector,
                  service: str, number: int, timeout: float = 10.0) -> tuple | None:
    """POST /service/<service>/scale to `replica`, then wait for the connector's backend to
    receive the order: (sent, answered, received) as time.time(); None when it did not
    arrive within `timeout` or the replica refused (it says why)."""
    sent = time.time()
    response = session.post(f"{replica.url}/service/{service}/scale", json={"number": number},
                            timeout=30)
    answered = time.time()
    if response.status_code != 202:
        print(f"  {service}: {response.status_code} {response.text[:200]}")
        return None
    received = connector.arrival(service, number, timeout)
    return None if received is None else (sent, answered, received)


def latency_part(args, consul: ConsulAgent, workdir: Path, history: bool = True) -> dict:
    print("\n2. scale latency: POST /service/<s>/scale to a follower until the connector "
          "receives the order; 3 replicas, poll_interval 15s, one connector (latency 0); "
          + ("order history on (as shipped)" if history else "order history OFF"))
    prefix = unique_prefix()
    connector = CountingConnector("--latency", "0", log_path=workdir / "latency.log")
    settings = {"connector": {"poll_interval": "15s"}}
    replicas = []
    results = {}
    try:
        env = {} if history else {"GENISYS_BENCH_NO_HISTORY": "1"}
        replicas = [Replica(consul.address, prefix, settings, env=env).start(wait=False)
                    for _ in range(3)]
        for replica in replicas:
            wait_until(replica.serving, timeout=20, what=f"replica {replica.url}")
        response = replicas[0].request("POST", "/compute",
                                       {"name": "local", "connector": connector.url})
        assert response.status_code == 201, response.text
        leader = the_leader(replicas)
        followers = [r for r in replicas if r is not leader]
        session = requests.Session()

        def one(service: str, number: int, follower: Replica) -> tuple | None:
            return scale_through(session, follower, connector, service, number)

        for i in range(5):  # warm-up: connections, the leader's first cycles
            one(f"warm-{i}", 1, followers[i % 2])
        background = {}
        pids = [consul.pid, connector.pid, *(r.pid for r in replicas)]
        for others in [0, *args.background]:
            if others:
                # Other services with a desired total: every replica's views hold them all.
                more = {f"bg-{i:05d}": 1 for i in range(len(background), others)}
                background.update(more)
                put_totals(consul, f"{prefix}resources/", more)
                wait_until(lambda: converged_on_connector(connector, background)
                           == len(background), timeout=args.memory_timeout, interval=0.25,
                           what=f"{others} background services to converge")
                wait_until(lambda: sum(1 for key in consul.kv_keys(f"{prefix}status/")
                                       if key.startswith(f"{prefix}status/bg-"))
                           >= len(background),
                           timeout=60, interval=0.25, what="their status records")
            count = args.requests if not others else args.background_requests
            samples, lost = {}, 0
            load = OtherLoad(pids)
            for i in range(count):
                service, number = f"lat{others}-{i:04d}", 1 + i % 3
                sample = one(service, number, followers[i % 2])
                if sample is None:
                    lost += 1
                else:
                    samples[service, number] = sample
                time.sleep(args.gap)
            results[others] = (samples, lost, load.cpus())
        decided = leader_decisions(leader.log())
    finally:
        for replica in replicas:
            replica.stop()
            shutil.rmtree(replica.dir, ignore_errors=True)
        connector.stop()

    figures = {}
    for others, (samples, lost, load) in results.items():
        if not samples:
            print(f"  with {others} other services: no order reached the connector!")
            continue
        total = [1000 * (r - s) for s, a, r in samples.values()]
        api = [1000 * (a - s) for s, a, r in samples.values()]
        to_decision = [1000 * (decided[k] - a) for k, (s, a, r) in samples.items()
                       if k in decided]
        to_connector = [1000 * (r - decided[k]) for k, (s, a, r) in samples.items()
                        if k in decided]
        p50, p99 = percentile(total, 0.50), percentile(total, 0.99)
        label = (f"{len(total)} orders, no other service" if not others
                 else f"{len(total)} orders, {others} other services")
        print(f"  {label}: follower -> connector p50 {p50:6.1f} ms  p90 "
              f"{percentile(total, 0.9):6.1f} ms  p99 {p99:6.1f} ms  max {max(total):6.1f} ms"
              + (f" ({lost} never arrived within 10 s!)" if lost else "")
              + f"; other programs used {load:.1f} CPUs meanwhile")
        print(f"    of which: the follower's 202 p50 {percentile(api, 0.5):5.1f} ms p99 "
              f"{percentile(api, 0.99):5.1f} ms;  202 -> leader logs the order p50 "
              f"{percentile(to_decision, 0.5):5.1f} ms p99 {percentile(to_decision, 0.99):5.1f}"
              f" ms;  leader log -> backend p50 {percentile(to_connector, 0.5):4.1f} ms "
              f"(log stamps are to the ms)")
        if not others:
            print(f"  target p50 <= {TARGET_P50_MS:g} ms: {verdict(p50 <= TARGET_P50_MS)};  "
                  f"target p99 <= {TARGET_P99_MS:g} ms: {verdict(p99 <= TARGET_P99_MS)}")
        figures[others] = {"p50": p50, "p99": p99}
    sys.stdout.flush()
    return figures


# -- 3. leader memory with many services ---------------------------------------------

def put_totals(consul: ConsulAgent, resources_prefix: str, totals: dict[str, int]) -> None:
    """Desired totals written straight into Consul, as a bulk import would."""
    consul.kv_put_many({f"{resources_prefix}{service}": str(n) for service, n in totals.items()})


def converged_on_connector(connector: CountingConnector, totals: dict[str, int]) -> int:
    counts = connector.counts()
    return sum(1 for s, n in totals.items() if counts.get(s) == n)


def full_observation(replica) -> dict | None:
    """The leader's worker for compute `local`: its last full observation (at, seconds)."""
    cycle = replica.request("GET", "/health").json().get("last_cycle") or {}
    return (cycle.get("computes") or {}).get("local")


def converged_in_status(consul: ConsulAgent, prefix: str, totals: dict[str, int]) -> int:
    """Services whose status record in Consul says observed == desired."""
    done = 0
    for key, value in consul.kv_values(f"{prefix}status/").items():
        service = key[len(f"{prefix}status/"):]
        status = json.loads(value or b"{}")
        if service in totals and status.get("observed", {}).get("local") == totals[service]:
            done += 1
    return done


def memory_part(args, consul: ConsulAgent, workdir: Path) -> dict:
    count = args.memory_services
    print(f"\n3. leader memory: {count} desired totals written into Consul KV, one bulk "
          f"counting connector, one replica (the leader), poll_interval 15s")
    prefix = unique_prefix()
    resources = f"{prefix}resources/"
    connector = CountingConnector("--latency", "0", log_path=workdir / "memory.log")
    replica = Replica(consul.address, prefix, {"connector": {"poll_interval": "15s"}})
    result = {}
    try:
        replica.start()
        response = replica.request("POST", "/compute", {"name": "local", "connector": connector.url})
        assert response.status_code == 201, response.text
        wait_until(replica.leads, timeout=30, what="the replica to lead")
        pid = replica.process.pid
        time.sleep(0.5)
        idle = memory_mb(pid)
        cpu_before = cpu_seconds(pid)
        totals = {name: 1 + i % 3 for i, name in enumerate(service_names(count))}
        load = OtherLoad([consul.pid, connector.pid, pid])
        started = time.monotonic()
        put_totals(consul, resources, totals)
        written = time.monotonic() - started
        print(f"  wrote {count} totals in {written:.2f}s ({(count + 63) // 64} transactions); "
              f"leader RSS before: {idle['VmRSS']:.0f} MB", flush=True)

        deadline = started + args.memory_timeout
        orders_done = status_done = None
        slowest_health = 0.0  # the leader's API shares its event loop with the reconciler
        while time.monotonic() < deadline:
            if replica.process.poll() is not None:
                raise RuntimeError(f"the replica exited:\n{replica.log()[-3000:]}")
            asked = time.monotonic()
            requests.get(f"{replica.url}/health", timeout=30)
            slowest_health = max(slowest_health, time.monotonic() - asked)
            if orders_done is None and converged_on_connector(connector, totals) == count:
                orders_done = time.monotonic() - started
            if orders_done is not None and converged_in_status(consul, prefix, totals) == count:
                status_done = time.monotonic() - started
                break
            time.sleep(0.25)
        cpu_used = cpu_seconds(pid) - cpu_before
        others_cpus = load.cpus()
        after_convergence = memory_mb(pid)
        # The compute worker's next full observation of all the services once converged
        # (no orders; GET /health says when it completed and what it took), to include its
        # peak and report its time; the next one is at most poll_interval away.
        full = None
        wait_full = time.monotonic() + 20
        seen = full_observation(replica)
        while time.monotonic() < wait_full:
            latest = full_observation(replica)
            if latest and seen and latest["at"] != seen["at"]:
                full = int(1000 * latest["seconds"])
                break
            seen = seen or latest
            time.sleep(0.25)
        peak = memory_mb(pid)
        received = len(re.findall(r" scale svc-\d+ from ", connector.log()))
        sent = len(re.findall(r"INFO genisys\.engine\.workers: scaling ", replica.log()))
    finally:
        replica.stop()
        shutil.rmtree(replica.dir, ignore_errors=True)
        connector.stop()

    if orders_done is None:
        print(f"  did NOT converge within {args.memory_timeout:g}s")
    else:
        print(f"  all {count} orders carried out (connector counts = desired) "
              f"{orders_done:.1f}s after the first write; status records all current after "
              + (f"{status_done:.1f}s" if status_done else "(not within the time limit)")
              + f"; other programs used {others_cpus:.1f} CPUs meanwhile")
    print(f"  leader: {sent} scale orders sent ({received} received), CPU {cpu_used:.1f}s "
          f"until converged; next full cycle over {count} services: "
          + (f"{full} ms" if full is not None else "not seen within 20 s"))
    print(f"  slowest GET /health on the leader while it converged: "
          f"{slowest_health * 1000:.0f} ms (sampled every 0.25 s)")
    hwm = peak["VmHWM"]
    print(f"  leader peak RSS (VmHWM) {hwm:.0f} MB (at convergence "
          f"{after_convergence['VmHWM']:.0f} MB; RSS now {peak['VmRSS']:.0f} MB, "
          f"idle before {idle['VmRSS']:.0f} MB);  target < {TARGET_RSS_MB:g} MB: "
          f"{verdict(hwm < TARGET_RSS_MB)}", flush=True)
    result.update(hwm=hwm, converged=orders_done, status=status_done)
    return result


# -- main ---------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05,
                        help="seconds per connector call in part 1 (0.05)")
    parser.add_argument("--rounds", type=int, default=3, help="observe cycles per setting (3)")
    parser.add_argument("--concurrency", default="16,32,64,128",
                        help="connector.concurrency values for part 1a")
    parser.add_argument("--requests", type=int, default=200, help="scale requests in part 2")
    parser.add_argument("--background", default="1000",
                        help="comma-separated: measure again with this many other services "
                             "already managed (1000; '' for none)")
    parser.add_argument("--background-requests", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.005,
                        help="seconds between one order's arrival and the next request (0.005)")
    parser.add_argument("--memory-services", type=int, default=10000)
    parser.add_argument("--memory-timeout", type=float, default=180.0)
    parser.add_argument("--skip", default="",
                        help="comma-separated: observe, latency, nohistory, memory")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.background = [int(n) for n in args.background.split(",") if n]
    skip = set(filter(None, args.skip.split(",")))

    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"(other programs on the machine make these figures noisy)\n", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    try:
        if "observe" not in skip:
            results = asyncio.run(observe_part(args, workdir))
            default = statistics.median(r["wall"] for r in results["a", DEFAULT_CONCURRENCY])
            bulk = statistics.median(r["wall"] for r in results["b"])
            print(f"  target (a) <= {TARGET_PER_SERVICE:g} s at the default concurrency "
                  f"{DEFAULT_CONCURRENCY}: {verdict(default <= TARGET_PER_SERVICE)} (median "
                  f"{default:.3f}s);  target (b) <= {TARGET_BULK:g} s: "
                  f"{verdict(bulk <= TARGET_BULK)} (median {bulk:.3f}s)", flush=True)
        if skip >= {"latency", "memory"}:
            return 0
        consul = ConsulAgent(own=True)
        try:
            if "latency" not in skip:
                without = {} if "nohistory" in skip else latency_part(args, consul, workdir,
                                                                     history=False)
                with_history = latency_part(args, consul, workdir)
                for others in without.keys() & with_history.keys():
                    print(f"  cost of the order history, {others} other services: p50 "
                          f"{with_history[others]['p50'] - without[others]['p50']:+.1f} ms, "
                          f"p99 {with_history[others]['p99'] - without[others]['p99']:+.1f} ms "
                          f"(with minus without, same run)")
            if "memory" not in skip:
                memory_part(args, consul, workdir)
        finally:
            consul.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
