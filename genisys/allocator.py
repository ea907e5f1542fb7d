"""A replica runs on the C library's malloc, and gives back the memory it freed.

Python's own small-object allocator keeps each 1 MiB arena as long as one object in it
lives. A leader's transient work (a full pass over 100,000 services, a connector's bulk
status, the status records) is allocated among the objects it keeps (each service's
status and history), so freed arenas stay pinned: measured at 100,000 services, 117 MB of
live objects took 390-450 MB of RSS in the leader, against 254 MB on the C library's
malloc with its free pages given back every few seconds (malloc_trim).
"""

import asyncio
import ctypes
import functools
import os
import sys

TRIM_EVERY = 5.0  # seconds between two malloc_trim calls


def use_system_malloc() -> None:
    """Run this process again (same PID, same arguments) with PYTHONMALLOC=malloc, unless
    PYTHONMALLOC is set: an operator's choice, `pymalloc` included, is kept."""
    if "PYTHONMALLOC" in os.environ or not sys.platform.startswith("linux"):
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def release_free_memory() -> bool:
    """Give the pages malloc holds free back to the system (glibc's malloc_trim); False
    where there is no such call (musl, other systems)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


async def release_periodically(every: float = TRIM_EVERY) -> None:
    """release_free_memory() every `every` seconds until cancelled (about 20 ms each on a
    300 MB heap full of holes); returns at once where there is no such call."""
    while release_free_memory():
        await asyncio.sleep(every)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
