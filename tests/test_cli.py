"""The `access-audit` command: migrate, users add (the first admin), demo --if-empty."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session

from app.cli import main
from app.users.models import User
from tests.conftest import ROOT


@pytest.fixture
def environment(
    new_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The CLI's settings come from the environment: point them at a fresh database."""
    url = new_database()
    for name, value in {
        "AUDIT_DATABASE_URL": url, "AUDIT_POLICY_DIR": str(ROOT / "policies"),
        "AUDIT_SECRET_KEY": "cli-test-secret-key-that-is-long-enough-0123",
        "AUDIT_SIGNING_KEY_FILE": str(tmp_path / "signing.pem"),
        "AUDIT_STATE_DIR": str(tmp_path), "AUDIT_ARGON2_TIME_COST": "1",
        "AUDIT_ARGON2_MEMORY_COST": "1024",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return url


def _user(url: str, username: str) -> User | None:
    engine = create_engine(url)
    with Session(engine) as session:
        user = session.scalar(select(User).where(User.username == username))
    engine.dispose()
    return user


def test_migrate_brings_the_schema_to_head(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate"]) == 0
    assert "at head" in capsys.readouterr().out
    engine = create_engine(environment)
    assert {"events", "users", "checkpoints"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_users_add_reads_the_password_from_stdin(
    environment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long first password\n"))
    code = main(["users", "add", "first.admin", "--role", "admin", "--password", "-"])
    assert code == 0
    assert "created first.admin with roles admin" in capsys.readouterr().out
    user = _user(environment, "first.admin")
    assert user is not None
    assert user.roles == ["admin"]
    assert user.password_hash is not None
    assert "a long first password" not in user.password_hash


def test_users_add_actor_with_facilities(environment: str) -> None:
    code = main(["users", "add", "sgt.miller", "--role", "guard_clerk", "--facility", "greene",
                 "--volunteer"])  # fmt: skip
    assert code == 0
    user = _user(environment, "sgt.miller")
    assert user is not None
    assert (user.facilities, user.volunteer, user.password_hash) == (["greene"], True, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "general"], "unknown role 'general'"),
        (["--role", "admin", "--role", "auditor"], "separation of duties"),
        (["--role", "guard_clerk", "--facility", "atlantis"], "unknown facility 'atlantis'"),
        (["--role", "admin", "--password", "short"], "password"),
    ],
)
def test_users_add_refuses_what_the_api_refuses(
    environment: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["users", "add", "someone", *args]) == 2
    assert message in capsys.readouterr().err
    assert _user(environment, "someone") is None


def test_users_add_twice_is_refused(environment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "add", "officer.lee", "--role", "oversight"]) == 0
    assert main(["users", "add", "officer.lee", "--role", "oversight"]) == 2
    assert "taken" in capsys.readouterr().err


def test_demo_if_empty_does_not_load_into_a_used_database(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["users", "add", "officer.lee", "--role", "oversight"]) == 0
    assert main(["demo"]) == 1
    assert "already has users" in capsys.readouterr().err
    assert main(["demo", "--if-empty"]) == 0
    assert "not loaded by the demo" in capsys.readouterr().out
    assert _user(environment, "dps.okafor") is None


def test_log_info_prints_a_generated_origin_kept_with_the_database(
    environment: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.ledger.note import Verifier

    assert main(["log", "info"]) == 0
    first = capsys.readouterr().out.split()
    origin, vkey = first[1], first[3]
    assert origin.startswith("access-audit.invalid/")
    assert Verifier.from_vkey(vkey).name == origin  # a valid signed-note vkey
    assert main(["log", "info"]) == 0
    assert capsys.readouterr().out.split()[1] == origin  # generated once, then kept
    monkeypatch.setenv("AUDIT_LOG_ORIGIN", "audit.dps.example/guard-mission")
    assert main(["log", "info"]) == 0
    assert capsys.readouterr().out.split()[1] == "audit.dps.example/guard-mission"


@pytest.mark.parametrize(("flags", "logged"), [([], False), (["--access-log"], True)])
def test_serve_writes_request_lines_only_when_asked(
    environment: str, monkeypatch: pytest.MonkeyPatch, flags: list[str], logged: bool
) -> None:
    """A request line names its path and query (case records, actors, filters) in plain
    text outside the log: `serve` leaves uvicorn's access log off unless asked."""
    import uvicorn

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options, app=app))
    assert main(["serve", "--port", "8123", *flags]) == 0
    assert seen["app"] == "app.main:app"
    assert seen["port"] == 8123
    assert seen["access_log"] is logged


def test_serve_names_the_parser_and_loop_that_kept_decisions_isolated(
    environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's "auto" takes uvloop and httptools whenever they are installed; under
    floods they let ordinary decisions starve (docs/operations.md), so `serve` names h11
    and asyncio's loop."""
    import uvicorn

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options, app=app))
    assert main(["serve", "--port", "8123"]) == 0
    assert (seen["http"], seen["loop"]) == ("h11", "asyncio")
