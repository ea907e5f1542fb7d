"""What /proc says about a process: shared by the benchmarks."""

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
