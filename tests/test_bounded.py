"""Work over many items without holding the event loop (genisys.bounded)."""

import asyncio

import pytest

from genisys.bounded import each, slices


def test_each_runs_at_most_limit_at_once_with_limit_tasks_and_keeps_the_order():
    async def scenario():
        running, most, tasks = 0, 0, set()

        async def work(item):
            nonlocal running, most
            running += 1
            most = max(most, running)
            tasks.add(asyncio.current_task())
            await asyncio.sleep(0)
            running -= 1
            return item * 2

        results = await each(range(1000), 8, work)
        return results, most, len(tasks)

    results, most, tasks = asyncio.run(scenario())
    assert results == [item * 2 for item in range(1000)]
    assert most == 8
    assert tasks == 8  # not one task per item: the ready queue stays short


def test_each_stops_taking_items_after_a_failure_and_raises_it():
    taken = []

    async def work(item):
        taken.append(item)
        await asyncio.sleep(0)
        if item == 3:
            raise ValueError("item 3")

    with pytest.raises(ValueError, match="item 3"):
        asyncio.run(each(range(100), 2, work))
    assert len(taken) < 10


def test_slices_let_other_tasks_run_between_two_slices():
    async def scenario():
        turns = []

        async def other():
            while True:
                turns.append("other")
                await asyncio.sleep(0)

        running = asyncio.create_task(other())
        await asyncio.sleep(0)
        async for chunk in slices(range(10), 4):
            turns.append(chunk)
        running.cancel()
        return turns

    turns = asyncio.run(scenario())
    chunks = [t for t in turns if t != "other"]
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    between = turns[turns.index(chunks[0]) + 1:turns.index(chunks[1])]
    assert "other" in between
