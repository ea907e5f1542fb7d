"""Failover of a dead compute's share: how long until it runs elsewhere, and what the
decision costs per service.

    python -m bench.failover_share [--services 1000] [--computes 5] [--failover-after 5s]
                                   [--poll-interval 1s] [--timeout 1s]

Everything real and on loopback: a Consul dev agent, one replica (`python main.py`,
strategy spread, failover on), --computes counting connectors (bench/counting_connector.py).
--services totals of 2 per compute are written into Consul (transactions of 64) and
carried out. Then, in the same run:

1. baseline: every total grows by one per compute (an ordinary scale, written the same
   way): time until every connector reports it;
2. failover: the last connector is stopped (SIGSTOP: its calls time out, as on a compute
   cut off by the network): time from failover_after until every service's total runs
   on the other computes (this includes noticing the first failed call, within one
   poll_interval);
3. return: SIGCONT: time until it reports 0 of everything (its surplus scaled to 0),
   then time until the share is back (failback_after = failover_after, failback_step 1);
4. decision cost, in-process: genisys.failover.decide over the same services with one
   compute dead, per service, beside genisys.placement.place per service (the placing a
   scale does).
"""

import argparse
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from genisys.config import parse_duration
from genisys.failover import Health, Policy, decide
from genisys.placement import place
from genisys.plan import Desired
from tests.connector_helpers import CountingConnector
from tests.support import ConsulAgent, Replica, unique_prefix, wait_until


def service_names(count: int) -> list[str]:
    return [f"svc-{i:05d}" for i in range(count)]


def timed(condition, timeout: float, what: str) -> float:
    """Seconds until `condition()` holds, polled every 0.1 s."""
    started = time.monotonic()
    wait_until(condition, timeout=timeout, interval=0.1, what=what)
    return time.monotonic() - started


def everywhere(connectors: list[CountingConnector], names: list[str], count: int) -> bool:
    """Every connector runs `count` of every service."""
    return all(all(c.get(s) == count for s in names) for c in (k.counts() for k in connectors))


def totals_on(connectors: list[CountingConnector], names: list[str], total: int) -> bool:
    """Every service runs `total`, summed over `connectors`."""
    seen = [c.counts() for c in connectors]
    return all(sum(c.get(s, 0) for c in seen) == total for s in names)


def decision_cost(services: int, computes: int) -> tuple[float, float]:
    """Seconds per service: decide() with the last compute dead, and place()."""
    names = [f"c{i}" for i in range(1, computes + 1)]
    totals = {s: 3 * computes for s in service_names(services)}
    placements = {s: place(t, names, {}, "spread", service=s) for s, t in totals.items()}
    desired = Desired({c: "" for c in names}, totals, placements)
    health = {c: Health(healthy_since=0) for c in names} | {names[-1]: Health(failing_since=0)}
    started = time.perf_counter()
    decision = decide(desired, health, {}, set(), "spread", Policy(60, 60), now=60)
    per_decide = (time.perf_counter() - started) / services
    assert len(decision.placements) == services
    started = time.perf_counter()
    for service, total in totals.items():
        place(total + 1, names, placements[service], "spread", service=service)
    return per_decide, (time.perf_counter() - started) / services


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--computes", type=int, default=5)
    parser.add_argument("--failover-after", type=parse_duration, default=5.0)
    parser.add_argument("--poll-interval", type=parse_duration, default=1.0)
    parser.add_argument("--timeout", type=parse_duration, default=1.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-failover-share-"))
    names = service_names(args.services)
    with ExitStack() as stack:
        consul = ConsulAgent(own=True)
        stack.callback(consul.stop)
        connectors = []
        for i in range(args.computes):
            connectors.append(CountingConnector(log_path=workdir / f"c{i + 1}.log"))
            stack.callback(connectors[-1].stop)
        dead = connectors[-1]
        stack.callback(dead.process.send_signal, signal.SIGCONT)  # a stopped one ignores TERM
        prefix = unique_prefix()
        replica = Replica(consul.address, prefix, {
            "connector": {"poll_interval": args.poll_interval, "timeout": args.timeout},
            "placement": {"strategy": "spread", "failover_after": args.failover_after,
                          "failback_step": 1}})
        stack.callback(replica.stop)
        replica.start()
        for i, connector in enumerate(connectors, 1):
            answer = replica.request("POST", "/compute", {"name": f"c{i}",
                                                          "connector": connector.url})
            assert answer.status_code == 201, answer.text
        wait_until(replica.leads, timeout=30, what="the replica to lead")
        print(f"{args.services} services over {args.computes} counting connectors, "
              f"failover_after {args.failover_after:g}s, poll_interval "
              f"{args.poll_interval:g}s, connector timeout {args.timeout:g}s")

        def put_totals(per_compute: int) -> None:
            consul.kv_put_many({f"{prefix}resources/{s}": str(per_compute * args.computes)
                                for s in names})

        put_totals(2)
        took = timed(lambda: everywhere(connectors, names, 2), 600, "the first placement")
        print(f"  first placement, 2 per compute: converged in {took:.2f}s")
        put_totals(3)
        baseline = timed(lambda: everywhere(connectors, names, 3), 600, "the scale")
        print(f"  baseline, an ordinary scale to 3 per compute: converged in {baseline:.2f}s")

        dead.process.send_signal(signal.SIGSTOP)
        took = timed(lambda: totals_on(connectors[:-1], names, 3 * args.computes), 600,
                     "the failover")
        print(f"  failover: the dead compute's share ({3 * args.services} instances) runs on "
              f"the other {args.computes - 1} computes {took - args.failover_after:.2f}s after "
              f"failover_after ({took:.2f}s after the stop; baseline {baseline:.2f}s)")

        dead.process.send_signal(signal.SIGCONT)
        surplus = timed(lambda: not any(dead.counts().values()), 300, "the surplus to go")
        back = timed(lambda: everywhere(connectors, names, 3), 600, "the share to come back")
        print(f"  return: surplus scaled to 0 {surplus:.2f}s after it answers again; share "
              f"back {back:.2f}s later (failback_after {args.failover_after:g}s, one instance "
              f"per service per step)")

    per_decide, per_place = decision_cost(args.services, args.computes)
    print(f"  decision cost: failover.decide {per_decide * 1e6:.1f} us per service, beside "
          f"placement.place {per_place * 1e6:.1f} us per service (baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
