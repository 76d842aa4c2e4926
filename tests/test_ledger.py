"""The ledger's append path: chaining, the database refusing changes, concurrent appends."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.context import AppContext, build_context
from app.ledger.canonical import GENESIS_HASH, canonical_bytes, chain_hash
from app.ledger.models import Checkpoint, Event
from app.ledger.service import NewEvent, random_uuids
from app.main import create_app
from app.users.schemas import UserCreate
from tests.conftest import PASSWORD, make_settings


def _append(session: Session, context: AppContext, n: int) -> None:
    now = context.clock()
    context.ledger.append(
        session,
        now,
        [NewEvent(kind="admin", actor="system", action="test", details={"i": i}) for i in range(n)],
    )
    session.flush()


def test_appends_chain_hashes_over_canonical_form(session: Session, context: AppContext) -> None:
    _append(session, context, 3)
    events = session.scalars(select(Event).order_by(Event.seq)).all()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    prev = GENESIS_HASH
    for event in events:
        row = {c: getattr(event, c) for c in Event.__table__.columns.keys()}
        assert event.prev_hash == prev
        assert event.hash == chain_hash(prev, canonical_bytes(row))
        prev = event.hash


def test_details_the_fast_encoder_refuses_are_stored_all_the_same(
    session: Session, context: AppContext
) -> None:
    # An integer past 64 bits has a canonical form (the stdlib's) but none in orjson, which
    # writes the stored text: the append falls back rather than fail.
    details = {"n": 2**70, "é": [1.5e-7, None]}
    [appended] = context.ledger.append(
        session, context.clock(), [NewEvent(kind="admin", actor="system", action="test",
                                            details=details)]
    )  # fmt: skip
    session.flush()
    session.expire_all()
    event = session.get(Event, appended.seq)
    assert event is not None
    assert event.details == details
    row = {c: getattr(event, c) for c in Event.__table__.columns.keys()}
    assert event.hash == chain_hash(event.prev_hash, canonical_bytes(row))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET actor = 'someone else'",
        "DELETE FROM events",
        "UPDATE checkpoints SET seq = 1",
        "DELETE FROM checkpoints",
    ],
)
def test_database_refuses_update_and_delete(
    session: Session, context: AppContext, statement: str
) -> None:
    _append(session, context, context.ledger.checkpoint_interval)  # also signs a checkpoint
    assert session.scalar(select(Checkpoint.seq).limit(1)) is not None
    nested = session.begin_nested()
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text(statement))
    nested.rollback()
    assert session.scalar(select(Event.seq).limit(1)) is not None


def test_postgres_refuses_truncate(session: Session, context: AppContext) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("TRUNCATE exists on PostgreSQL only")
    _append(session, context, 1)
    nested = session.begin_nested()
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("TRUNCATE events"))
    nested.rollback()


def test_checkpoint_signed_at_every_interval(session: Session, context: AppContext) -> None:
    interval = context.ledger.checkpoint_interval
    _append(session, context, interval * 2 + 5)
    head = session.scalar(select(Event.seq).order_by(Event.seq.desc()).limit(1))
    assert head is not None
    seqs = set(session.scalars(select(Checkpoint.seq)))
    assert {s for s in range(1, head + 1) if s % interval == 0} <= seqs


def test_twenty_concurrent_logins_leave_one_gap_free_chain(
    new_database: Callable[[], str], tmp_path: object
) -> None:
    from pathlib import Path

    url = new_database()
    context = build_context(make_settings(url, Path(str(tmp_path))))
    with context.database.transaction() as session:
        for i in range(5):
            context.users.create_user(
                session,
                None,
                UserCreate(
                    username=f"officer.{i}",
                    full_name="Officer",
                    roles=["oversight"],
                    password=PASSWORD,
                ),
            )
    app = create_app(context=context)
    with TestClient(app) as client:

        def login(i: int) -> int:
            password = PASSWORD if i % 3 else "wrong password!!"
            return client.post(
                "/v1/auth/token",
                data={
                    "grant_type": "password",
                    "username": f"officer.{i % 5}",
                    "password": password,
                },
            ).status_code

        with ThreadPoolExecutor(max_workers=20) as pool:
            codes = list(pool.map(login, range(20)))
    assert sorted(set(codes)) == [200, 401]
    with context.database.reader() as session:
        events = session.scalars(select(Event).order_by(Event.seq)).all()
    logins = [e for e in events if e.kind == "login"]
    assert len(logins) == 20
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    prev = GENESIS_HASH
    for event in events:
        row = {c: getattr(event, c) for c in Event.__table__.columns.keys()}
        assert event.prev_hash == prev
        assert event.hash == chain_hash(prev, canonical_bytes(row))
        prev = event.hash
    context.dispose()


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = random_uuids(2000)
    assert len(set(ids)) == 2000
    for event_id in ids:
        parsed = uuid.UUID(event_id)
        assert str(parsed) == event_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    assert random_uuids(0) == []


def test_an_events_fields_are_declared_once() -> None:
    """The model declares an event's fields; what a caller logs (`NewEvent`), the canonical
    form and the CSV columns follow it."""
    from dataclasses import fields

    from app.ledger.canonical import CANONICAL_ORDER
    from app.ledger.export_format import CSV_COLUMNS
    from app.ledger.models import ASSIGNED_FIELDS, CONTENT_FIELDS, EVENT_FIELDS, HASHED_FIELDS
    from app.reports.schemas import EventRead

    assert tuple(f.name for f in fields(NewEvent)) == CONTENT_FIELDS
    assert set(CONTENT_FIELDS) | set(ASSIGNED_FIELDS) == set(EVENT_FIELDS)
    assert CSV_COLUMNS == EVENT_FIELDS
    assert tuple(EventRead.model_fields) == EVENT_FIELDS
    assert sorted(HASHED_FIELDS) == list(CANONICAL_ORDER)
    assert {"prev_hash", "hash"}.isdisjoint(HASHED_FIELDS)
