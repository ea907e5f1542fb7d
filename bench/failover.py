"""Leader failover time: kill -9 or SIGTERM the leader, time until another replica leads.

    python -m bench.failover [--rounds 20] [--check-ttl 3s] [--lock-delay 1s]

Starts its own Consul dev agent and three replicas (real processes, `python main.py`).
Each round finds the leader, signals it, polls the other replicas' GET /health every
10 ms until one says it leads, then starts a replacement so that three replicas run
again. Prints min / median / max per signal. Targets (DESIGN section 8): median
failover after kill -9 <= 5 s, after SIGTERM <= 0.5 s.
"""

import argparse
import signal
import statistics
import sys
import time

from genisys.config import parse_duration
from tests.support import ConsulAgent, Replica, the_leader, unique_prefix, wait_until

POLL = 0.01


def one_round(replicas: list[Replica], sig: int) -> tuple[float, Replica]:
    """Signal the leader; seconds until another replica leads, and the stopped one."""
    leader = the_leader(replicas, interval=POLL)
    others = [r for r in replicas if r is not leader]
    started = time.monotonic()
    leader.process.send_signal(sig)
    wait_until(lambda: any(r.leads() for r in others), timeout=60, interval=POLL,
               what="another replica to lead")
    elapsed = time.monotonic() - started
    code = leader.process.wait(timeout=15)
    leader.stop()  # closes its log; the process has exited already
    if sig != signal.SIGKILL:
        if code != 0:
            raise SystemExit(f"the leader exited with {code} on SIGTERM:\n{leader.log()}")
    return elapsed, leader


def summary(name: str, times: list[float], target: float) -> str:
    median = statistics.median(times)
    verdict = "meets" if median <= target else "MISSES"
    return (f"{name:<8} rounds {len(times):>3}  min {min(times):6.3f}s  median {median:6.3f}s  "
            f"max {max(times):6.3f}s   ({verdict} the target: median <= {target:g}s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="rounds per signal (20)")
    parser.add_argument("--check-ttl", default="3s", help="leader.check_ttl (3s, the default)")
    parser.add_argument("--lock-delay", default="1s", help="leader.lock_delay (1s, the default)")
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args(argv)
    settings = {"leader": {"check_ttl": f"{parse_duration(args.check_ttl):g}s",
                           "lock_delay": f"{parse_duration(args.lock_delay):g}s"}}

    consul = ConsulAgent(own=True)
    prefix = unique_prefix()
    replicas: list[Replica] = []
    results: dict[str, list[float]] = {"kill -9": [], "SIGTERM": []}
    try:
        def start_replica() -> Replica:
            replica = Replica(consul.address, prefix, settings).start()
            replicas.append(replica)
            return replica

        for _ in range(args.replicas):
            start_replica()
        print(f"Consul {consul.address}, {args.replicas} replicas, check_ttl "
              f"{settings['leader']['check_ttl']}, lock_delay {settings['leader']['lock_delay']}, "
              f"{args.rounds} rounds per signal", flush=True)
        for name, sig in (("kill -9", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)):
            for number in range(1, args.rounds + 1):
                elapsed, gone = one_round(replicas, sig)
                replicas.remove(gone)
                results[name].append(elapsed)
                print(f"  {name} round {number:>2}: another replica leads after "
                      f"{elapsed:.3f}s", flush=True)
                start_replica()
        print()
        print(summary("kill -9", results["kill -9"], 5.0))
        print(summary("SIGTERM", results["SIGTERM"], 0.5))
    finally:
        for replica in replicas:
            try:
                replica.stop()
            except AssertionError as exc:
                print(exc, file=sys.stderr)
        consul.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
