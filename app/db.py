"""Database: engine, session factories, the declarative Base and portable column types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Compiled, Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.expression import Executable
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base whose constraints are named the same on every database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON everywhere; JSONB on PostgreSQL so list columns can be searched with @>.
JSONList = JSON().with_variant(JSONB(), "postgresql")


def is_sqlite(bind: Engine | Connection | Session) -> bool:
    """True when the bind talks to SQLite."""
    return (
        bind.get_bind().dialect.name == "sqlite"
        if isinstance(bind, Session)
        else (bind.dialect.name == "sqlite")
    )


def make_engine(url: str, lock_timeout_seconds: float = 10.0, **kwargs: Any) -> Engine:
    """An engine with the project's connection settings for SQLite or PostgreSQL.

    On SQLite a writer waits at most `lock_timeout_seconds` for the write lock (the
    ledger's lock timeout): a log that cannot be written fails fast, it does not hang.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": lock_timeout_seconds},
            **kwargs,
        )
        _configure_sqlite(engine, int(lock_timeout_seconds * 1000))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    # pysqlite's own transaction handling cannot issue BEGIN IMMEDIATE; take it over
    # (the SQLAlchemy-documented recipe) so writers can take the write lock up front.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def session_factories(engine: Engine) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    """(reader, writer) session factories; a writer on SQLite takes the write lock at BEGIN.

    A deferred SQLite transaction that reads first and writes later fails at once if
    another writer committed in between (WAL snapshot); taking the lock at BEGIN makes
    writers queue instead, which is what serialises ledger appends on SQLite.
    """
    reader = sessionmaker(bind=engine, expire_on_commit=False)
    writer = sessionmaker(
        bind=engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
    )
    return reader, writer


# A read to run with others (`read_together`): a statement and its parameters.
Read = tuple[Executable, Mapping[str, Any]]


def read_together(session: Session, reads: Sequence[Read]) -> list[list[tuple[Any, ...]]]:
    """Run `reads` in order in the session's transaction; each one's rows, as tuples.

    On PostgreSQL they go to the server in one round trip (psycopg's pipeline mode) and
    run there one after the other, as they would have one by one: a read still sees what
    committed before it started, so reads placed after a lock see every write it waited
    for. Elsewhere (SQLite, in process) they simply run one by one.

    The rows are the driver's, without SQLAlchemy's result processing: use it for reads
    of numbers, text, booleans, dates and JSON (which psycopg decodes as SQLAlchemy would),
    not of timestamps. On PostgreSQL a statement cannot use expanding (IN) parameters: pass
    an array.
    """
    if not reads:
        return []
    if is_sqlite(session):
        return [[tuple(row) for row in session.execute(stmt, params)] for stmt, params in reads]
    dialect = session.get_bind().dialect
    driver = session.connection().connection.driver_connection
    assert driver is not None
    cursors = []
    try:
        with driver.pipeline():
            for statement, params in reads:
                sql, processors = _driver_form(statement, dialect)
                values = dict(sql.construct_params(dict(params)) or {})
                for name, process in processors.items():
                    values[name] = process(values[name])
                cursors.append(driver.execute(str(sql), values))
        return [cursor.fetchall() for cursor in cursors]
    except dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy would raise it
        raise DBAPIError.instance(
            None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc


_DRIVER_FORMS: dict[tuple[int, str], tuple[Executable, Compiled, dict[str, Any]]] = {}


def _driver_form(statement: Executable, dialect: Dialect) -> tuple[Compiled, dict[str, Any]]:
    """`statement` compiled for `dialect`, and its parameters' bind processors (once each)."""
    key = (id(statement), dialect.name)
    known = _DRIVER_FORMS.get(key)
    if known is None or known[0] is not statement:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if "POSTCOMPILE" in str(compiled):
            raise ValueError("read_together cannot run expanding (IN) parameters")
        processors = {
            name: process
            for name, bind in compiled.binds.items()
            if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        known = _DRIVER_FORMS[key] = (statement, compiled, processors)
    return known[1], known[2]
