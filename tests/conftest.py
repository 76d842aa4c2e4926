"""Test fixtures: a real database built by the real migrations, one rolled-back transaction
per test, and an HTTP client on the real app.

`AUDIT_TEST_DATABASE_URL` picks the server (PostgreSQL in CI's second leg); each run works
in a database of its own, created here and dropped afterwards, so runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.clock import utcnow
from app.config import Settings
from app.context import AppContext, build_context
from app.db import Database, make_engine, read_session, write_session
from app.main import create_app
from app.migrate import upgrade
from app.policy.evaluator import CompiledPolicy
from app.policy.loader import load_policy
from app.users.models import User
from app.users.schemas import UserCreate

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def _server_url() -> str | None:
    return os.environ.get("AUDIT_TEST_DATABASE_URL") or None


@pytest.fixture(scope="session")
def new_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """A factory of empty, migrated databases; every one is dropped at the end of the run."""
    server = _server_url()
    created: list[str] = []

    def make() -> str:
        name = f"aa_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        if server is None:
            url = f"sqlite:///{tmp_path_factory.mktemp('db') / (name + '.db')}"
        else:
            admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = make_url(server).set(database=name).render_as_string(hide_password=False)
            created.append(name)
        upgrade(url)
        return url

    yield make
    if server is not None and created:
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(new_database: Callable[[], str]) -> str:
    return new_database()


def make_settings(database_url: str, key_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "policy_dir": ROOT / "policies",
        "secret_key": "test-secret-key-that-is-long-enough-0123456789",
        "signing_key_file": key_dir / "signing.pem",
        "state_dir": key_dir,
        "argon2_time_cost": 1,
        "argon2_memory_cost": 1024,
        "ledger_lock_timeout_seconds": 20.0,
        # Every test client sends from one address; tests of the limit set their own.
        "login_rate_limit": 100_000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(database_url, tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def policy() -> CompiledPolicy:
    return load_policy(ROOT / "policies")


class MovableClock:
    """The service's clock in a test: the real time, unless the test sets one."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at if self.at is not None else utcnow()

    def set(self, at: datetime | None) -> None:
        self.at = at


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield session
    session.close()
    outer.rollback()
    connection.close()


@pytest.fixture
def context(
    settings: Settings, policy: CompiledPolicy, session: Session, clock: MovableClock
) -> AppContext:
    """The app's context for one test: its clock is `clock`, and every session it opens
    itself (decision groups, export events) is a savepoint of the test's transaction."""
    connection = session.connection()
    database = Database(connection, settings.ledger_lock_timeout_seconds)
    return build_context(settings, database=database, policy=policy, clock=clock)


@pytest.fixture
def client(context: AppContext, session: Session) -> Iterator[TestClient]:
    app = create_app(context=context)

    def test_session() -> Iterator[Session]:
        # Each request is its own transaction on top of what the test set up (a savepoint),
        # so a request that fails rolls back only its own work.
        session.commit()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise

    app.dependency_overrides[read_session] = test_session
    app.dependency_overrides[write_session] = test_session
    with TestClient(app) as test_client:
        yield test_client


def make_user(
    session: Session,
    context: AppContext,
    username: str,
    roles: list[str],
    facilities: list[str] | None = None,
    volunteer: bool = True,
    password: str | None = PASSWORD,
) -> User:
    body = UserCreate(
        username=username,
        full_name=username.title(),
        roles=roles,
        facilities=facilities or [],
        volunteer=volunteer,
        password=password,
    )
    user = context.users.create_user(session, None, body)
    session.flush()
    return user


def token(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Authorization header for a user, through the real token endpoint."""
    response = client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def as_role(
    client: TestClient, session: Session, context: AppContext
) -> Callable[[str], dict[str, str]]:
    """Headers for a fresh user holding one service role."""

    def headers(role: str) -> dict[str, str]:
        username = f"{role}.{uuid.uuid4().hex[:6]}"
        make_user(session, context, username, [role])
        return token(client, username)

    return headers


def at(text_value: str) -> datetime:
    """A UTC datetime from an ISO string with offset."""
    return datetime.fromisoformat(text_value).astimezone(UTC)


NOV_3_MORNING = at("2025-11-03T10:00:00-06:00")  # a Monday, all facilities live


def decision(**overrides: Any) -> dict[str, Any]:
    """A decision request body that the shipped policy allows for sgt.miller."""
    body: dict[str, Any] = {
        "actor": "sgt.miller",
        "action": "update_case",
        "record": {"type": "detainee_case", "id": "GRN-2025-00042", "facility": "greene"},
        "purpose": "case_update",
    }
    body.update(overrides)
    return body


def make_actor(
    session: Session,
    context: AppContext,
    username: str,
    roles: list[str],
    facilities: list[str],
    *,
    volunteer: bool = True,
    trained_on: str | None = "2025-09-15",
) -> User:
    """A mission actor (no password) with every required module completed on `trained_on`."""
    user = make_user(session, context, username, roles, facilities, volunteer, password=None)
    if trained_on is not None:
        from datetime import date

        from app.users.models import Training

        completed = date.fromisoformat(trained_on)
        for module in context.policy.required_training:
            session.add(Training(
                user_id=user.id, module=module, completed_on=completed,
                expires_on=context.policy.training_expiry(module, completed),
                recorded_at=utcnow(), recorded_by="test",
            ))  # fmt: skip
        session.flush()
        session.refresh(user, ["training"])
    return user


@pytest.fixture
def integration(client: TestClient, session: Session, context: AppContext) -> dict[str, str]:
    """Headers for a registered integration client (client-credentials grant)."""
    from app.users.schemas import ClientCreate

    registered, secret = context.users.create_client(
        session, None, ClientCreate(name="Case management")
    )
    response = client.post("/v1/auth/token", data={
        "grant_type": "client_credentials", "client_id": registered.client_id,
        "client_secret": secret,
    })  # fmt: skip
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def record_access(
    session: Session,
    context: AppContext,
    *,
    occurred_at: datetime,
    actor: str = "sgt.miller",
    roles: Sequence[str] = ("guard_clerk",),
    action: str = "read_case",
    record_id: str = "GRN-2025-00042",
    facility: str = "greene",
    purpose: str = "records_request",
    decision: str = "allow",
    reasons: Sequence[str] = (),
    flags: Sequence[str] = (),
    kind: str = "decision",
    justification: str | None = None,
    break_glass: bool = False,
) -> int:
    """Append an access event shaped like the access endpoints' ones; returns its seq."""
    from app.ledger.service import NewEvent

    [appended] = context.ledger.append(session, context.clock(), [NewEvent(
        kind=kind, occurred_at=occurred_at, actor=actor, actor_roles=list(roles),
        action=action, action_category=context.policy.action_category.get(action),
        record_type="detainee_case", record_id=record_id, facility=facility, purpose=purpose,
        justification=justification, break_glass=break_glass, decision=decision,
        reasons=list(reasons), flags=list(flags), source="cli_test", workstation="WS-01",
        policy_version=context.policy.version,
        details={"reasons": [{"code": c, "message": f"why: {c}"} for c in reasons]},
    )])  # fmt: skip
    session.flush()
    return appended.seq
