"""/readyz is 503 when the log cannot actually be written (contract section 15), and its
probe leaves no trace. Real database, real sessions, a fresh database per test; the log is
made unwritable the way an operator's mistake would: a read-only SQLite file (opened
read-only, since chmod does not stop root), a read-only PostgreSQL session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.context import AppContext, build_context
from app.db import make_engine
from app.errors import LedgerUnavailable
from app.ledger.models import Event
from app.main import create_app
from tests.conftest import make_settings, record_access


@pytest.fixture
def url(new_database: Callable[[], str], tmp_path: Path) -> str:
    """A fresh database that has been started once (its signing key published)."""
    database_url = new_database()
    engine = make_engine(database_url)
    context = build_context(make_settings(database_url, tmp_path), engine=engine)
    context.start()
    engine.dispose()
    return database_url


def read_only_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return make_engine(f"sqlite:///file:{parsed.database}?mode=ro&uri=true")
    return make_engine(url, connect_args={"options": "-c default_transaction_read_only=on"})


def test_readyz_is_503_when_the_database_is_read_only(url: str, tmp_path: Path) -> None:
    engine = read_only_engine(url)
    context = build_context(make_settings(url, tmp_path), engine=engine)
    try:
        with TestClient(create_app(context=context)) as client:
            response = client.get("/readyz")
    finally:
        engine.dispose()
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    # The database answers reads: it is the log that cannot be written.
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["ledger"].startswith("unavailable: ")


def test_appends_on_a_read_only_database_fail_as_readyz_says(url: str, tmp_path: Path) -> None:
    """The probe and a real append agree (the append is what readiness stands for)."""
    engine = read_only_engine(url)
    context = build_context(make_settings(url, tmp_path), engine=engine)
    try:
        with (
            pytest.raises((DBAPIError, LedgerUnavailable)),
            context.database.transaction() as session,
        ):
            record_access(session, context, occurred_at=context.clock())
    finally:
        engine.dispose()


def _state(context: AppContext, url: str) -> tuple[int, int, tuple[int, ...]]:
    with context.database.reader() as session:
        count = session.scalar(select(func.count()).select_from(Event)) or 0
        top = session.scalar(select(func.max(Event.seq))) or 0
    parsed = make_url(url)
    sizes: tuple[int, ...] = ()
    if parsed.get_backend_name() == "sqlite":
        base = Path(str(parsed.database))
        sizes = tuple(
            p.stat().st_size if p.exists() else -1
            for p in (base, base.with_name(base.name + "-wal"))
        )
    return count, top, sizes


def test_the_probe_leaves_no_trace(url: str, tmp_path: Path) -> None:
    engine = make_engine(url)
    context = build_context(make_settings(url, tmp_path), engine=engine)
    try:
        with context.database.transaction() as session:
            record_access(session, context, occurred_at=context.clock())
        before = _state(context, url)
        with TestClient(create_app(context=context)) as client:
            for _ in range(3):
                assert client.get("/readyz").status_code == 200
        assert _state(context, url) == before
        # The next append takes the next seq: the probe used up no sequence number.
        with context.database.transaction() as session:
            seq = record_access(session, context, occurred_at=context.clock())
        assert seq == before[1] + 1
    finally:
        engine.dispose()
