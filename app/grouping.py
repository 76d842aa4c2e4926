"""Work that waits goes together: one threadpool hop and one transaction per group.

A request that needs the database from the event loop normally pays a threadpool hop, a
session and its own statements; under load, many small hops contend for the GIL and, for
appends, for the one lock that orders the log. A `GroupQueue` turns that into a queue per
event loop and key: the first item starts a task that runs everything waiting, as one
group, through the caller's `run`, then the next group (what arrived meanwhile), until the
queue is empty. An idle service adds no delay (a group of one runs at once); a busy one
runs larger groups. Each item gets its own result or its own exception (`run` may answer an
item with an exception instance), or the group's exception if `run` raises.

An item whose request was cancelled before its group started is dropped; once the group
has started, it runs to the end (a decision logged for a client that hung up stays logged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

T = TypeVar("T")
R = TypeVar("R")

# Answers each item in order: its result, or the exception it fails with.
Run = Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]


@dataclass(slots=True)
class _Waiting(Generic[T, R]):
    item: T
    result: asyncio.Future[R]


@dataclass(slots=True)
class _Lane(Generic[T, R]):
    waiting: list[_Waiting[T, R]] = field(default_factory=list)
    # Held here: the loop keeps only a weak reference to a task.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class GroupQueue(Generic[T, R]):
    """Queues of items per event loop and key, each emptied in groups of at most `max_group`.

    Items of one key must be runnable together: the task started by a key's first item runs
    every group of that key with the `run` that item brought.
    """

    def __init__(self, max_group: int) -> None:
        self.max_group = max_group
        # A future or a task must not cross event loops: one set of lanes per loop.
        self._lanes: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _Lane[T, R]]]
        self._lanes = WeakKeyDictionary()

    async def submit(self, key: Hashable, item: T, run: Run[T, R], running: int = 1) -> R:
        """Queue `item` under `key` and return its result once its group has run.

        Up to `running` groups of a key run at once (each takes what is waiting when it
        starts): more than one pays when a group spends much of its time waiting on I/O.
        """
        loop = asyncio.get_running_loop()
        lanes = self._lanes.setdefault(loop, {})
        waiting = _Waiting[T, R](item, loop.create_future())
        lane = lanes.get(key)
        if lane is None:
            lane = lanes[key] = _Lane()
        lane.waiting.append(waiting)
        if len(lane.tasks) < running:
            lane.tasks.add(loop.create_task(self._drain(lanes, key, lane, run)))
        return await waiting.result

    async def _drain(
        self, lanes: dict[Hashable, _Lane[T, R]], key: Hashable, lane: _Lane[T, R], run: Run[T, R]
    ) -> None:
        try:
            while lane.waiting:
                group = [w for w in lane.waiting[: self.max_group] if not w.result.done()]
                del lane.waiting[: self.max_group]
                if group:
                    await _run_group(group, run)
        finally:
            lane.tasks.discard(asyncio.current_task())
            if not lane.tasks:
                del lanes[key]
                for waiting in lane.waiting:  # left only if this task itself was cancelled
                    waiting.result.cancel()


async def _run_group(group: list[_Waiting[T, R]], run: Run[T, R]) -> None:
    try:
        results = await run([w.item for w in group])
    except Exception as exc:
        for waiting in group:
            if not waiting.result.done():
                waiting.result.set_exception(exc)
        return
    except BaseException:
        for waiting in group:
            waiting.result.cancel()
        raise
    for waiting, result in zip(group, results, strict=True):
        if waiting.result.done():
            continue
        if isinstance(result, Exception):
            waiting.result.set_exception(result)
        else:
            waiting.result.set_result(result)
