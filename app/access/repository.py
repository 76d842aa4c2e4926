"""Queries of the access path: recent records per actor (for the volume-spike flag)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, or_, select, text
from sqlalchemy.orm import Session

from app.db import UTCDateTime
from app.ledger.models import Event

ACCESS_KINDS = ("decision", "report")
WINDOWS_PER_QUERY = 100
Touch = tuple[datetime, str | None, str | None]

# Core columns, not ORM attributes: these rows are read on every decision and report.
_e = Event.metadata.tables[Event.__tablename__].c


@cache
def _windows_query(n: int) -> Select[Any]:
    """Access events in n (actor, since, until) windows, one OR branch each; built once per
    n, so a decision (n = 1) or a batch pays neither building nor cache-key generation."""
    at = _e.occurred_at
    # No condition on `kind` here: with one, SQLite (no statistics) walks the kind index
    # over every access event ever logged instead of one index range per window.
    return select(_e.actor, at, _e.record_type, _e.record_id, _e.kind).where(
        or_(*(
            and_(_e.actor == bindparam(f"actor_{i}"),
                 at > bindparam(f"since_{i}", type_=at.type),
                 at <= bindparam(f"until_{i}", type_=at.type))
            for i in range(n)
        )),
    )  # fmt: skip


# PostgreSQL: the windows as arrays, one statement text whatever their number (prepared
# once per connection, where each count of OR branches was a statement of its own, planned
# anew), walked as one (actor, occurred_at) index range per window.
_PG_WINDOWS = text(
    "SELECT e.actor, e.occurred_at, e.record_type, e.record_id, e.kind "
    "FROM unnest(CAST(:actors AS text[]), CAST(:sinces AS timestamptz[]), "
    "CAST(:untils AS timestamptz[])) AS w(actor, since, until) "
    "JOIN events e ON e.actor = w.actor AND e.occurred_at > w.since "
    "AND e.occurred_at <= w.until"
).columns(
    _e.actor, occurred_at=UTCDateTime(), record_type=_e.record_type.type,
    record_id=_e.record_id.type, kind=_e.kind.type,
)  # fmt: skip


def touches(
    session: Session, windows: Sequence[tuple[str, datetime, datetime]]
) -> dict[str, list[Touch]]:
    """Per actor: (occurred_at, record_type, record_id) of access events in each window."""
    found: dict[str, list[Touch]] = {}
    postgresql = session.get_bind().dialect.name == "postgresql"
    step = max(len(windows), 1) if postgresql else WINDOWS_PER_QUERY
    for start in range(0, len(windows), step):
        chunk = windows[start : start + step]
        query: Any
        params: dict[str, Any] = {}
        if postgresql:
            query = _PG_WINDOWS
            params = {
                "actors": [actor for actor, _, _ in chunk],
                "sinces": [since for _, since, _ in chunk],
                "untils": [until for _, _, until in chunk],
            }
        else:
            query = _windows_query(len(chunk))
            for i, (actor, since, until) in enumerate(chunk):
                params.update({f"actor_{i}": actor, f"since_{i}": since, f"until_{i}": until})
        for actor, occurred_at, record_type, record_id, kind in session.execute(query, params):
            if kind in ACCESS_KINDS:
                found.setdefault(actor or "", []).append((occurred_at, record_type, record_id))
    return found
