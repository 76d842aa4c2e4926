"""The CSV cell encoding reads back to exactly the hashed values."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.canonical import canonical_bytes, chain_hash
from app.ledger.export_format import CSV_COLUMNS, csv_row, parse_row
from app.ledger.models import Event
from app.ledger.service import NewEvent


def test_cells_round_trip_to_the_same_hash(session: Session, context: AppContext) -> None:
    tricky = [
        NewEvent(
            kind="admin",
            actor='=HYPERLINK("x")',
            action="+1",
            record_id="-42",
            justification="'quoted",
            workstation="@desk\tone",
            details={"note": 'a;b,"c"'},
        ),
        NewEvent(
            kind="admin",
            actor="plain",
            justification="",
            break_glass=False,
            actor_roles=["guard_clerk", "oversight"],
            reasons=["unknown_actor"],
            flags=["after_hours"],
            details={"ünïcode": "✓", "n": [1, None, True]},
        ),
        NewEvent(kind="admin", actor="\rcarriage", break_glass=True),
    ]
    context.ledger.append(session, context.clock(), tricky)
    session.flush()
    events = session.scalars(select(Event).order_by(Event.seq.desc()).limit(3)).all()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for event in reversed(events):
        writer.writerow(csv_row({c: getattr(event, c) for c in CSV_COLUMNS}))
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert rows[0]["actor"].startswith("'=")
    assert rows[0]["record_id"] == "'-42"
    assert rows[0]["justification"] == "''quoted"
    assert rows[1]["justification"] == ""  # stored as null, not as an empty string
    assert rows[1]["actor_roles"] == "guard_clerk;oversight"
    for row in rows:
        values = parse_row(row)
        assert chain_hash(row["prev_hash"], canonical_bytes(values)) == row["hash"]
