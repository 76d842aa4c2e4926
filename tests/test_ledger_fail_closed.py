"""Fail closed: while the ledger cannot be written, nothing that must be logged reports
success, and /readyz says so. Real database, real sessions (no test transaction), a fresh
database per test; the ledger is made unwritable by another connection holding its lock, or
by a trigger that refuses inserts (the stand-in for a full disk)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from app.context import AppContext, build_context
from app.db import make_engine
from app.ledger.append_store import LEDGER_LOCK_KEY
from app.ledger.models import Event
from app.main import create_app
from app.users.schemas import UserCreate
from tests.conftest import PASSWORD, make_settings

NEWCOMER = {"username": "new.officer", "full_name": "New Officer", "roles": ["oversight"]}


@pytest.fixture
def fresh(new_database: Callable[[], str], tmp_path: Path) -> Iterator[AppContext]:
    """A service context on a fresh database with an admin, waiting at most 0.5 s for a lock."""
    url = new_database()
    engine = make_engine(url, lock_timeout_seconds=0.5)
    context = build_context(
        make_settings(url, tmp_path, ledger_lock_timeout_seconds=0.5), engine=engine
    )
    with context.database.transaction() as session:
        body = UserCreate(
            username="admin.one", full_name="Admin", roles=["admin"], password=PASSWORD
        )
        context.users.create_user(session, None, body)
    yield context
    engine.dispose()


@contextmanager
def ledger_held(url: str) -> Iterator[None]:
    """Another connection holds what an append needs: SQLite's write lock, or the advisory lock."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        blocker = sqlite3.connect(str(parsed.database), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LEDGER_LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LEDGER_LOCK_KEY})
    engine.dispose()


@contextmanager
def inserts_refused(context: AppContext) -> Iterator[None]:
    """A trigger that refuses every new event, as a full disk or a broken table would."""
    postgres = context.database.engine.dialect.name == "postgresql"
    with context.database.engine.begin() as conn:
        if postgres:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'could not extend file: no space left'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER events_refuse_insert BEFORE INSERT ON events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER events_refuse_insert BEFORE INSERT ON events "
                    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
                )
            )
    try:
        yield
    finally:
        with context.database.engine.begin() as conn:
            conn.execute(
                text("DROP TRIGGER events_refuse_insert ON events")
                if postgres
                else text("DROP TRIGGER events_refuse_insert")
            )


def login(client: TestClient, username: str = "admin.one") -> Any:
    return client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": PASSWORD},
    )


def event_count(context: AppContext) -> int:
    with context.database.reader() as session:
        return session.scalar(select(func.count()).select_from(Event)) or 0


def test_readyz_is_503_while_the_ledger_lock_is_held(fresh: AppContext) -> None:
    with TestClient(create_app(context=fresh)) as client:
        assert client.get("/readyz").status_code == 200
        with ledger_held(fresh.settings.database_url):
            response = client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["status"] == "unavailable"
        assert client.get("/readyz").status_code == 200


def test_appends_are_503_and_leave_nothing_while_the_lock_is_held(fresh: AppContext) -> None:
    with TestClient(create_app(context=fresh)) as client:
        admin = {"Authorization": f"Bearer {login(client).json()['access_token']}"}
        before = event_count(fresh)
        with ledger_held(fresh.settings.database_url):
            created = client.post("/v1/users", json=NEWCOMER, headers=admin)
            assert created.status_code == 503
            assert "access_token" not in login(client).json()
            assert login(client).status_code == 503
        assert event_count(fresh) == before
        assert client.get("/v1/users/new.officer", headers=admin).status_code == 404
        assert client.post("/v1/users", json=NEWCOMER, headers=admin).status_code == 201


def test_a_log_that_refuses_inserts_fails_closed(fresh: AppContext) -> None:
    with TestClient(create_app(context=fresh)) as client:
        admin = {"Authorization": f"Bearer {login(client).json()['access_token']}"}
        before = event_count(fresh)
        with inserts_refused(fresh):
            assert client.post("/v1/users", json=NEWCOMER, headers=admin).status_code == 503
            response = login(client)
            assert response.status_code == 503
            assert response.json() == {
                "detail": "the audit log is unavailable; nothing was recorded"
            }
        assert event_count(fresh) == before
        assert client.get("/v1/users/new.officer", headers=admin).status_code == 404


def test_nothing_is_answered_before_it_commits(
    fresh: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route that writes commits before its response is sent: when the commit fails,
    the answer is 503 — no user reported created, no token handed out — and nothing stays."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    with TestClient(create_app(context=fresh)) as client:
        admin = {"Authorization": f"Bearer {login(client).json()['access_token']}"}
        before = event_count(fresh)
        real_commit = Session.commit

        def full_disk(self: Session) -> None:
            if self.new or self.dirty or self.info.get("wrote"):
                raise OperationalError("COMMIT", {}, Exception("database or disk is full"))
            real_commit(self)

        monkeypatch.setattr(Session, "commit", full_disk)
        from app.ledger.service import LockedAppend

        real_append = LockedAppend.append

        def append(self: LockedAppend, *args: Any) -> Any:
            self._session.info["wrote"] = True
            return real_append(self, *args)

        monkeypatch.setattr(LockedAppend, "append", append)
        created = client.post("/v1/users", json=NEWCOMER, headers=admin)
        assert created.status_code == 503
        refused = login(client)
        assert refused.status_code == 503
        assert "access_token" not in refused.json()
        monkeypatch.undo()
        assert event_count(fresh) == before
        assert client.get("/v1/users/new.officer", headers=admin).status_code == 404
