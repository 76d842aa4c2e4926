"""The clock the service reads: injected into everything that needs the time (a leaf)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The real time, timezone-aware UTC."""
    return datetime.now(UTC)
