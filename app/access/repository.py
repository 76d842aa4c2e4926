"""Queries of the access path: recent records per actor (for the volume-spike flag)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, TextClause, and_, bindparam, or_, select, text
from sqlalchemy.orm import Session

from app.db import Read, UTCDateTime, is_sqlite
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


def _pg_window(since: str, until: str) -> str:
    """PostgreSQL: event `e` is w.actor's, in (since, until].

    Row comparisons on (actor, occurred_at), which only the (actor, occurred_at) index can
    serve: with a plain range on occurred_at, a plan made while the table had no statistics
    yet sometimes walked ix_events_occurred_at instead, i.e. every event of the window
    whoever made it (seen in bench/decisions: whole runs of group writes 4-8x slower, as
    the prepared statement kept that plan).
    """
    return (
        f"e.actor = w.actor AND (e.actor, e.occurred_at) > (w.actor, {since}) "
        f"AND (e.actor, e.occurred_at) <= (w.actor, {until})"
    )


# PostgreSQL: the windows as arrays, one statement text whatever their number (prepared
# once per connection, where each count of OR branches was a statement of its own, planned
# anew), walked as one (actor, occurred_at) index range per window.
_PG_WINDOWS = text(
    "SELECT e.actor, e.occurred_at, e.record_type, e.record_id, e.kind "
    "FROM unnest(CAST(:actors AS text[]), CAST(:sinces AS timestamptz[]), "
    "CAST(:untils AS timestamptz[])) AS w(actor, since, until) "
    f"JOIN events e ON {_pg_window('w.since', 'w.until')}"
).columns(
    _e.actor, occurred_at=UTCDateTime(), record_type=_e.record_type.type,
    record_id=_e.record_id.type, kind=_e.kind.type,
)  # fmt: skip


def touches(
    session: Session, windows: Sequence[tuple[str, datetime, datetime]]
) -> dict[str, list[Touch]]:
    """Per actor: (occurred_at, record_type, record_id) of access events in each window."""
    found: dict[str, list[Touch]] = {}
    postgresql = not is_sqlite(session)
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


def counts_windows(session: Session) -> bool:
    """Whether `window_reads` serves this database: PostgreSQL.

    There the database counts a window, so that a decision's cost does not grow with how
    busy its actor has been this hour (for the sweep, every touch of the hour crossed the
    wire). SQLite, in process, pays no transfer: the sweep measured as fast, and stays.
    """
    return not is_sqlite(session)


# One lateral lookup per actor or record, so that the (actor, occurred_at) and record
# indexes are used whatever the statistics say: with IN lists, a table not yet analysed was
# walked through the whole hour of every actor.
_ACCESS = f"e.kind IN ('decision', 'report') AND {_pg_window(':since', ':until')}"


def _window_text(sql: str) -> TextClause:
    return text(sql).bindparams(
        bindparam("since", type_=UTCDateTime()), bindparam("until", type_=UTCDateTime())
    )


_PG_DISTINCT_COUNTS = _window_text(
    "SELECT w.actor, count(*) FROM unnest(CAST(:actors AS text[])) AS w(actor) "
    "CROSS JOIN LATERAL (SELECT DISTINCT e.record_type, e.record_id FROM events e "
    f"WHERE {_ACCESS}) AS d GROUP BY w.actor"
)
_PG_LOGGED_RECORDS = _window_text(
    "SELECT w.actor, w.record_type, w.record_id FROM unnest(CAST(:actors AS text[]), "
    "CAST(:types AS text[]), CAST(:ids AS text[])) AS w(actor, record_type, record_id) "
    "CROSS JOIN LATERAL (SELECT 1 FROM events e WHERE e.record_type = w.record_type "
    f"AND e.record_id = w.record_id AND {_ACCESS} LIMIT 1) AS hit"
)


def window_reads(
    records: Collection[tuple[str, str, str]], since: datetime, until: datetime
) -> list[Read]:
    """PostgreSQL: the reads that count a window (since, until] for these (actor,
    record_type, record_id): per actor, the distinct records its access events touched;
    then which of `records` are among them. `window_counts` reads their rows."""
    ordered = sorted(records)
    return [
        (_PG_DISTINCT_COUNTS,
         {"actors": sorted({actor for actor, _, _ in ordered}), "since": since, "until": until}),
        (_PG_LOGGED_RECORDS,
         {"actors": [actor for actor, _, _ in ordered],
          "types": [record_type for _, record_type, _ in ordered],
          "ids": [record_id for _, _, record_id in ordered], "since": since, "until": until}),
    ]  # fmt: skip


def window_counts(
    rows: Sequence[Sequence[tuple[Any, ...]]],
) -> tuple[dict[str, int], set[tuple[str, str, str]]]:
    """The rows of `window_reads`: (distinct records per actor, the records among them)."""
    counts, logged = rows
    return {actor: count for actor, count in counts}, {(a, t, i) for a, t, i in logged}
