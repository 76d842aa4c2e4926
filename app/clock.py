"""The clock the service reads: injected into everything that needs the time (a leaf)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The real time, timezone-aware UTC."""
    return datetime.now(UTC)


def rounds(
    stop: threading.Event, interval: float, monotonic: Callable[[], float] = time.monotonic
) -> Iterator[None]:
    """A background thread's rounds: one every `interval` seconds, start to start, until
    `stop` is set. A round's own length is taken from the wait before the next (one longer
    than `interval` is followed at once): waiting a full interval after each round would
    stretch the period by the round's length (for checkpoints, the lag)."""
    started = monotonic()
    while not stop.wait(max(0.0, interval - (monotonic() - started))):
        started = monotonic()
        yield
