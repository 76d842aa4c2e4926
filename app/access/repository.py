"""Queries of the access path: recent records per actor (for the volume-spike flag)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.ledger.models import Event

ACCESS_KINDS = ("decision", "report")
Touch = tuple[datetime, str | None, str | None]


def touches(
    session: Session, windows: Sequence[tuple[str, datetime, datetime]]
) -> dict[str, list[Touch]]:
    """Per actor: (occurred_at, record_type, record_id) of access events in each window."""
    found: dict[str, list[Touch]] = {}
    for start in range(0, len(windows), 100):
        chunk = windows[start : start + 100]
        query = select(Event.actor, Event.occurred_at, Event.record_type, Event.record_id).where(
            Event.kind.in_(ACCESS_KINDS),
            or_(*(
                and_(Event.actor == actor, Event.occurred_at > since, Event.occurred_at <= until)
                for actor, since, until in chunk
            )),
        )  # fmt: skip
        for actor, occurred_at, record_type, record_id in session.execute(query):
            found.setdefault(actor or "", []).append((occurred_at, record_type, record_id))
    return found
