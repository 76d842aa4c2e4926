"""Files the service creates (the SQLite database and its -wal/-shm, the development keys)
are readable by its user only (contract section 15), whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db import make_engine
from app.keys import SECRET_FILE, SIGNING_KEY_FILE, service_keys
from app.migrate import upgrade


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual umask, which leaves new files world-readable unless the service says not."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE probe (a INTEGER)"))
        conn.execute(text("INSERT INTO probe VALUES (1)"))
        files = [path, tmp_path / "audit.db-wal", tmp_path / "audit.db-shm"]
        assert all(each.exists() for each in files)
        assert {each.name: mode(each) for each in files} == {each.name: 0o600 for each in files}
    engine.dispose()


def test_migrating_creates_a_private_database(tmp_path: Path) -> None:
    path = tmp_path / "migrated.db"
    upgrade(f"sqlite:///{path}")
    assert mode(path) == 0o600


def test_an_existing_database_file_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    make_engine(f"sqlite:///{path}").dispose()
    assert mode(path) == 0o640


def test_generated_development_keys_are_private(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}", state_dir=tmp_path)
    service_keys(settings)
    assert mode(tmp_path / SECRET_FILE) == 0o600
    assert mode(tmp_path / SIGNING_KEY_FILE) == 0o600
    # Nothing else was left behind (the drafts the keys are written through are gone).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SECRET_FILE, SIGNING_KEY_FILE])
