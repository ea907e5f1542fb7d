"""What /proc says about processes and the machine: CPU, peak memory, other programs' load.
Shared by the benchmarks (processes themselves are started by tests/support.py)."""

import os
import resource
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def own_cpu() -> float:
    """CPU time of this process and of its finished children (wrk runs)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) / 1024
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU that programs other than this bench and `pids` used while it measured, in CPUs:
    above ~0.1 the machine was busy and the figures are noisy."""

    def __init__(self, pids: list[int | None]):
        self.pids = [pid for pid in pids if pid]
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        ours = own_cpu() + sum(cpu_seconds(pid) or 0.0 for pid in self.pids)
        return time.monotonic(), machine_busy(), ours

    def cpus(self) -> float:
        (t0, busy0, ours0), (t1, busy1, ours1) = self._start, self._sample()
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(t1 - t0, 1e-9)
