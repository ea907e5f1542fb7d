"""Work over many items without holding the event loop: `each` runs awaitables a few at a
time, with a few tasks, not one task per item; `slices` cuts synchronous work in slices.

`asyncio.gather(*(work(x) for x in items))` behind a semaphore bounds the calls in
flight, not the tasks: 100,000 items make 100,000 tasks whose first steps all sit on the
event loop's ready queue at once, and every I/O answer (the leader's lock confirmation
among them) waits behind them. Here `limit` tasks take the items in turn.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable


async def each(items: Iterable, limit: int, work: Callable[..., Awaitable]) -> list:
    """`[await work(item) for item in items]`, at most `limit` at once, results in the
    order of `items`. The first exception stops the taking of new items and is raised
    once the items under way are done."""
    items = list(items)
    results = [None] * len(items)
    queue = iter(enumerate(items))
    failed: list[BaseException] = []

    async def take() -> None:
        for position, item in queue:
            if failed:
                return
            try:
                results[position] = await work(item)
            except Exception as exc:
                failed.append(exc)
                return

    await asyncio.gather(*(take() for _ in range(max(1, min(limit, len(items))))))
    if failed:
        raise failed[0]
    return results


async def slices(items: Iterable, size: int) -> AsyncIterator[list]:
    """`items` in lists of `size`, the event loop free between two: work over 100,000
    services must leave room for every other task, the leader's lock confirmation first."""
    items = list(items)
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        yield items[start:start + size]
