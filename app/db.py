"""Database: engine, sessions, the declarative Base and portable column types.

`Database` is built once per process (`app.context.build_context`) and knows which kind of
database it talks to; nothing below it asks again. Requests get their session from
`read_session` or `write_session` (chosen per route, `app.deps`); the write session
commits in one place, before the response is sent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from weakref import WeakKeyDictionary

import anyio
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from app.errors import LedgerUnavailable

_T = TypeVar("_T")

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


def make_engine(url: str, lock_timeout_seconds: float = 10.0, **kwargs: Any) -> Engine:
    """An engine with the project's connection settings for SQLite or PostgreSQL.

    On SQLite a writer waits at most `lock_timeout_seconds` for the write lock (the
    ledger's lock timeout): a log that cannot be written fails fast, it does not hang.
    """
    if url.startswith("sqlite"):
        create_private_sqlite_file(url)
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


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite database file that does not exist yet readable by this user only.

    SQLite would create it with the process's umask (usually 0644, world-readable); made
    here empty with mode 0600, it is a valid empty database, and SQLite gives its `-wal`
    and `-shm` files the database file's mode. An existing file is left as it is.
    """
    parsed = make_url(url)
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:") or parsed.query.get("uri"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # it exists (kept as it is), or its folder does not: SQLite will say
        pass


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
        # Checkpoint the WAL into the database every 10,000 pages (about 40 MB), not every
        # 1,000: a checkpoint syncs both files, and in-line it was half the cost of a
        # decision group's commit (bench/decisions.py); the WAL may grow to that size.
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """The engine and its two kinds of session, for one process.

    A writer on SQLite takes the write lock at BEGIN (a deferred transaction that reads
    first and writes later fails at once if another writer committed in between), and this
    process's writers queue for their turn on a lock of their own before that (`write_turn`).
    """

    def __init__(self, bind: Engine | Connection, lock_timeout_seconds: float) -> None:
        """`bind` is the engine; a connection (tests) makes every session a savepoint of the
        transaction it is in."""
        self.engine = bind.engine
        self._owns_engine = isinstance(bind, Engine)
        self.sqlite = bind.dialect.name == "sqlite"
        self.lock_timeout_seconds = lock_timeout_seconds
        self.reader = sessionmaker(
            bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        self.writer = sessionmaker(
            bind=bind.execution_options(sqlite_begin="IMMEDIATE") if self._owns_engine else bind,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
        # One lock per event loop (a lock must not outlive or cross its loop).
        self._turns: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            WeakKeyDictionary()
        )

    @asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        """On SQLite, wait for this process's turn to write (at most the lock timeout).

        SQLite's busy handler sleeps in growing steps (up to 100 ms) while another connection
        holds the write lock, so threads waiting inside it turn a queue into a trickle (and
        a p99 of seconds); a lock hands over at once. Other processes still queue in SQLite.
        PostgreSQL needs no turn: appends queue on the ledger's advisory lock.
        """
        if not self.sqlite:
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._turns.setdefault(loop, asyncio.Lock())  # on the loop's own thread
        try:
            await asyncio.wait_for(lock.acquire(), self.lock_timeout_seconds)
        except TimeoutError:
            raise LedgerUnavailable("the audit log is busy or unavailable; try again") from None
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A writer session for work outside a request (CLI, start-up): committed at the end
        of the block, rolled back if it raises."""
        with self.writer() as session, session.begin():
            yield session

    def write_from_thread(
        self, work: Callable[[Session], _T], loop: asyncio.AbstractEventLoop | None
    ) -> _T:
        """`work` in a write transaction of its own, from a thread beside the served app
        (the checkpoint publisher, the witness submitters), in this process's turn to write.

        On SQLite a thread that writes without the turn waits in SQLite's busy handler,
        whose growing sleeps under a steady stream of appends can miss every gap between
        them (a checkpoint stored seconds late); `write_turn` is a FIFO queue, so the
        thread's write waits for the writers ahead of it and no longer. `loop` is the
        served app's event loop; without one (CLI, tests), and on PostgreSQL (where the
        ledger's lock is the queue), a plain transaction.
        """

        def in_transaction() -> _T:
            with self.transaction() as session:
                return work(session)

        if loop is None or not self.sqlite:
            return in_transaction()

        async def in_turn() -> _T:
            async with self.write_turn():
                return await run_in_threadpool(in_transaction)

        return asyncio.run_coroutine_threadsafe(in_turn(), loop).result()

    def dispose(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


def database_of(request: Request) -> Database:
    """The process's database (`app.context` puts it on the app's state)."""
    return cast(Database, request.app.state.database)


async def read_session(request: Request) -> AsyncIterator[Session]:
    """A session for a route that only reads. Opening it does no I/O (this runs on the event
    loop); only ending a transaction that did work goes to the threadpool."""
    session = database_of(request).reader()
    try:
        yield session
    finally:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_end, session, False)
        else:
            session.close()


async def write_session(request: Request) -> AsyncIterator[Session]:
    """The one transaction of a route that writes: committed when the handler returns and
    before the response is sent (the route declares it with `scope="function"`), rolled
    back if the handler raises. No commit, no success: a failed commit is the response.
    """
    database = database_of(request)
    async with database.write_turn():
        session = database.writer()
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_end, session, False)
            raise
        if session.in_transaction():
            await run_in_threadpool(_end, session, True)
        else:
            session.close()


def _end(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()
