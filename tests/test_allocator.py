"""A replica gives the memory it freed back to the system (genisys/allocator.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_memory_freed_amid_what_is_kept_goes_back_to_the_system():
    """Freed below memory that stays allocated: free() alone keeps it."""
    code = """
from genisys.allocator import release_free_memory

def rss():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024

kept = [str(i) * 200 for i in range(200_000)]  # over 512 bytes each: glibc's heap
del kept[:180_000]
before = rss()
assert release_free_memory()
print(before, rss())
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    before, after = map(int, done.stdout.split())
    assert after < before / 2, (before, after)
