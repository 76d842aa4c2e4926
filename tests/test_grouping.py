"""app.grouping: work that waits runs together, each item gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.grouping import GroupQueue


class Recorder:
    """A `run` that records its groups and can be held until released."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_on: int | None = None

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.groups.append(list(items))
        await self.gate.wait()
        if self.fail_on in items:
            raise RuntimeError(f"group with {self.fail_on} failed")
        return [item * 10 for item in items]


def test_items_that_wait_run_as_one_group_in_order() -> None:
    async def scenario() -> tuple[list[int], list[list[int]]]:
        queue = GroupQueue[int, int](max_group=100)
        run = Recorder()
        run.gate.clear()
        first = asyncio.create_task(queue.submit("k", 0, run))
        await asyncio.sleep(0)  # the first group (item 0) starts and is held
        rest = [asyncio.create_task(queue.submit("k", i, run)) for i in range(1, 6)]
        await asyncio.sleep(0)
        run.gate.set()
        answers = await asyncio.gather(first, *rest)
        return answers, run.groups

    answers, groups = asyncio.run(scenario())
    assert answers == [0, 10, 20, 30, 40, 50]
    assert groups == [[0], [1, 2, 3, 4, 5]]


def test_groups_are_bounded_and_keys_do_not_mix() -> None:
    async def scenario() -> tuple[list[list[int]], list[list[int]]]:
        queue = GroupQueue[int, int](max_group=2)
        a, b = Recorder(), Recorder()
        tasks = [asyncio.create_task(queue.submit("a", i, a)) for i in range(5)]
        tasks += [asyncio.create_task(queue.submit("b", i, b)) for i in range(100, 103)]
        await asyncio.gather(*tasks)
        return a.groups, b.groups

    groups_a, groups_b = asyncio.run(scenario())
    assert groups_a == [[0, 1], [2, 3], [4]]
    assert groups_b == [[100, 101], [102]]


def test_a_failed_group_fails_each_of_its_items_and_only_those() -> None:
    async def scenario() -> list[object]:
        queue = GroupQueue[int, int](max_group=2)
        run = Recorder()
        run.fail_on = 1
        tasks = [asyncio.create_task(queue.submit("k", i, run)) for i in range(4)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert [type(o) for o in outcomes[:2]] == [RuntimeError, RuntimeError]
    assert outcomes[2:] == [20, 30]


def test_an_item_cancelled_before_its_group_starts_is_not_run() -> None:
    async def scenario() -> tuple[list[list[int]], bool]:
        queue = GroupQueue[int, int](max_group=10)
        run = Recorder()
        run.gate.clear()
        held = asyncio.create_task(queue.submit("k", 0, run))
        await asyncio.sleep(0)
        gone = asyncio.create_task(queue.submit("k", 1, run))
        kept = asyncio.create_task(queue.submit("k", 2, run))
        await asyncio.sleep(0)
        gone.cancel()
        run.gate.set()
        await asyncio.gather(held, kept)
        with pytest.raises(asyncio.CancelledError):
            await gone
        return run.groups, kept.result() == 20

    groups, kept_answered = asyncio.run(scenario())
    assert groups == [[0], [2]]
    assert kept_answered


def test_the_queue_starts_afresh_once_empty() -> None:
    async def scenario() -> list[list[int]]:
        queue = GroupQueue[int, int](max_group=10)
        run = Recorder()
        assert await queue.submit("k", 1, run) == 10
        assert await queue.submit("k", 2, run) == 20  # a new task, not a stale lane
        return run.groups

    assert asyncio.run(scenario()) == [[1], [2]]


def test_up_to_running_groups_of_a_key_run_at_once() -> None:
    async def scenario() -> tuple[int, list[list[int]]]:
        queue = GroupQueue[int, int](max_group=10)
        in_flight = peak = 0
        release = asyncio.Event()
        groups: list[list[int]] = []

        async def run(items: Sequence[int]) -> list[int]:
            nonlocal in_flight, peak
            groups.append(list(items))
            in_flight += 1
            peak = max(peak, in_flight)
            await release.wait()
            in_flight -= 1
            return list(items)

        tasks = [asyncio.create_task(queue.submit("k", 0, run, running=2))]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(queue.submit("k", i, run, running=2)) for i in (1, 2)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(queue.submit("k", 3, run, running=2)))
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.gather(*tasks) == [0, 1, 2, 3]
        return peak, groups

    peak, groups = asyncio.run(scenario())
    assert peak == 2
    assert sorted(i for group in groups for i in group) == [0, 1, 2, 3]  # each exactly once
