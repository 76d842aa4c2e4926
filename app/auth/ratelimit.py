"""Token requests per source address: a bucket of `limit` per `window`, refusals counted.

Each address may send `limit` token requests at once and then one every `window / limit`
seconds (GCRA, the token bucket in one number per address: no burst of twice the limit at
a window's edge). What it sends beyond that is refused at once, before anything is read
from the database or hashed, and only counted: the refusals of an address are reported in
windows of `window` seconds (`Refusals`), one report per address and window, so that a
flood is visible to oversight without costing a row in the log per packet.

The limiter is one process's memory: with N server processes behind one port, an address
may get N times the limit. Addresses that are back to a full bucket and have nothing left
to report are forgotten once more than `max_sources` are kept.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Final

MAX_SOURCES: Final = 100_000


@dataclass(slots=True)
class _Source:
    # The theoretical arrival time of the next request (GCRA): the bucket is full when it
    # is in the past, empty when it is a whole window ahead.
    due: float


@dataclass(slots=True)
class Refusals:
    """The token requests refused to one address in one window: `count` of them, the first
    at `first` and the last at `last` (POSIX seconds)."""

    source_ip: str | None
    count: int
    first: float
    last: float


class LoginRateLimit:
    """Admit or refuse token requests per source address; collect the refusals to report."""

    def __init__(self, limit: int, window_seconds: float, max_sources: int = MAX_SOURCES) -> None:
        self.limit = limit
        self.window = float(window_seconds)
        self._interval = self.window / limit
        self._max_sources = max_sources
        self._sources: dict[str | None, _Source] = {}
        # Open reports in the order their windows opened (a dict keeps insertion order).
        self._refusals: dict[str | None, Refusals] = {}
        self._lock = threading.Lock()

    def admit(self, source_ip: str | None, now: float) -> int | None:
        """None if a request from `source_ip` at `now` may go on; else it is counted as
        refused, and the answer is how many whole seconds to wait (`Retry-After`)."""
        with self._lock:
            source = self._sources.get(source_ip)
            if source is None:
                self._forget_some(now)
                source = self._sources[source_ip] = _Source(now)
            due = max(source.due, now)
            if due + self._interval - now <= self.window + 1e-9:
                source.due = due + self._interval
                return None
            refused = self._refusals.get(source_ip)
            if refused is None:
                self._refusals[source_ip] = Refusals(source_ip, 1, now, now)
            else:
                refused.count += 1
                refused.last = now
            return max(1, math.ceil(due + self._interval - self.window - now))

    def finished(self, now: float) -> list[Refusals]:
        """The reports whose window has ended by `now`, taken (each is given out once)."""
        taken: list[Refusals] = []
        with self._lock:
            while self._refusals:
                source_ip, refused = next(iter(self._refusals.items()))
                if refused.first + self.window > now:
                    break
                taken.append(self._refusals.pop(source_ip))
        return taken

    def all_open(self) -> list[Refusals]:
        """Every report not yet given out, ended or not (at shutdown)."""
        with self._lock:
            taken = list(self._refusals.values())
            self._refusals.clear()
        return taken

    def _forget_some(self, now: float) -> None:
        if len(self._sources) < self._max_sources:
            return
        # A full bucket is what a forgotten address starts with: nothing is lost.
        for source_ip in [ip for ip, source in self._sources.items() if source.due <= now]:
            del self._sources[source_ip]
        while len(self._sources) >= self._max_sources:  # still too many: the oldest go
            del self._sources[next(iter(self._sources))]
