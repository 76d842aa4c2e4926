"""Every query of the ledger's append path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import insert, select, text, tuple_
from sqlalchemy.orm import Session

from app.ledger.models import Checkpoint, Event, SigningKey

# One constant key for the transaction-scoped advisory lock that serialises appends.
LEDGER_LOCK_KEY = 0x6C6564676572  # "ledger"


def lock_for_append(session: Session, timeout_seconds: float) -> None:
    """Serialise appenders. PostgreSQL: advisory xact lock (waits at most the timeout).

    SQLite needs nothing here: writers open their transaction with BEGIN IMMEDIATE.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL lock_timeout = '{int(timeout_seconds * 1000)}ms'"))
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LEDGER_LOCK_KEY})


def head(session: Session) -> tuple[int, str] | None:
    """(seq, hash) of the last event, or None for an empty log."""
    row = session.execute(select(Event.seq, Event.hash).order_by(Event.seq.desc()).limit(1)).first()
    return (row.seq, row.hash) if row else None


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    session.execute(insert(Event), list(rows))


def insert_checkpoints(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    session.execute(insert(Checkpoint), list(rows))


def key_registered(session: Session, key_id: str) -> bool:
    return session.get(SigningKey, key_id) is not None


def register_key(session: Session, row: dict[str, Any]) -> None:
    session.execute(insert(SigningKey), [row])


def events_by_client_ids(
    session: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Event]:
    """Events already recorded under (source, client_event_id) pairs."""
    keys = list(keys)
    found: dict[tuple[str, str], Event] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = session.scalars(
            select(Event).where(tuple_(Event.source, Event.client_event_id).in_(chunk))
        )
        for event in rows:
            assert event.source is not None
            assert event.client_event_id is not None
            found[(event.source, event.client_event_id)] = event
    return found
