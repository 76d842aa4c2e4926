"""Running the Alembic migrations from code (the CLI and the tests use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url`, wherever the command is run from."""
    for base in (ROOT, Path.cwd()):
        if (base / "migrations" / "env.py").exists():
            break
    else:
        raise SystemExit("cannot find the migrations/ folder (run from the project folder)")
    config = Config(str(base / "alembic.ini")) if (base / "alembic.ini").exists() else Config()
    config.set_main_option("script_location", str(base / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def schema_state(engine: Engine, database_url: str) -> str:
    """'empty', 'current' or 'behind' (the database against the migration scripts)."""
    heads = set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if not current:
        return "empty"
    return "current" if current == heads else "behind"
