"""A replica runs on the C library's malloc and gives freed memory back (genisys/allocator.py)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_replica_runs_again_on_the_c_librarys_malloc_with_the_same_pid(replica):
    environ = Path(f"/proc/{replica.pid}/environ").read_bytes().split(b"\0")
    # An operator's own PYTHONMALLOC is kept; without one, the replica sets it.
    wanted = os.environ.get("PYTHONMALLOC", "malloc")
    assert f"PYTHONMALLOC={wanted}".encode() in environ
    assert replica.health()["status"] in ("ok", "degraded")


def test_memory_freed_amid_what_is_kept_goes_back_to_the_system():
    """Freed in the middle of the heap, above the memory that stays: free() alone keeps it."""
    code = """
from genisys.allocator import release_free_memory

def rss():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024

kept = [str(i) * 10 for i in range(1_000_000)]
del kept[:900_000]
before = rss()
assert release_free_memory()
print(before, rss())
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONMALLOC": "malloc"}, check=True)
    before, after = map(int, done.stdout.split())
    assert after < before / 2, (before, after)
