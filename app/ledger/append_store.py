"""The append path's queries, one strategy per database, chosen once (`store_for`).

Everything a locked append reads or writes runs here, on the session's own driver
connection: the append lock, the chain head, the events already logged under the asked
idempotency keys, the volume-window rows, the insert of new events and the upkeep of the
volume summary. They run on every decision and every batch of reports, so they skip
SQLAlchemy's per-statement work (compiling, result processing): plain SQL text and tuples,
in the database's own storage forms (as SQLAlchemy itself would store them, so the ORM
and the reports read these rows back like any other).

- SQLite (in process): each read is a prepared statement of the `sqlite3` module; the
  insert is one `executemany`.
- PostgreSQL: the lock, the head and every read go to the server in one round trip
  (psycopg's pipeline mode), and a read placed after the lock sees every append committed
  before it was granted; the insert is a `COPY`, the summary upkeep one `executemany`.

Driver errors come out as SQLAlchemy's (`DBAPIError` and its subclasses), as from any
other query.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.ledger.merkle import StoredHash
from app.ledger.models import EVENT_FIELDS, JSON_FIELDS, TIMESTAMP_FIELDS

# One constant key for the transaction-scoped advisory lock that serialises appends.
LEDGER_LOCK_KEY: Final = 0x6C6564676572  # "ledger"

# (source, client_event_id): what makes a request a repeat of one already logged.
IdempotencyKey = tuple[str, str]
# A bucket of one actor's volume summary: (actor, bucket).
WindowBucket = tuple[str, int]
# One row of the volume summary: (record_type, record_id, first_us, last_us).
TouchRow = tuple[str, str, int, int]
# An upkeep of the summary: (actor, width, bucket, record_type, record_id, first_us, last_us).
TouchUpkeep = tuple[str, int, int, str, str, int, int]

# What a repeated request is answered with.
LOGGED_COLUMNS: Final = (
    "seq", "event_id", "source", "client_event_id", "decision", "reasons", "flags",
    "policy_version", "details",
)  # fmt: skip
_LOGGED_JSON = tuple(i for i, name in enumerate(LOGGED_COLUMNS) if name in JSON_FIELDS)
_TIMESTAMPS = tuple(i for i, name in enumerate(EVENT_FIELDS) if name in TIMESTAMP_FIELDS)
_JSON = tuple(i for i, name in enumerate(EVENT_FIELDS) if name in JSON_FIELDS)
_EVENT_COLUMNS = ", ".join(EVENT_FIELDS)


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event already in the log under an idempotency key."""

    seq: int
    event_id: str
    source: str
    client_event_id: str
    decision: str | None
    reasons: list[str]
    flags: list[str]
    policy_version: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WindowReads:
    """The volume-summary rows to read with the lock: for each bucket, the `limit` rows
    touched last (`latest`, by `last_us` descending) or first (`earliest`, by `first_us`)."""

    width: int
    limit: int
    latest: Collection[WindowBucket] = ()
    earliest: Collection[WindowBucket] = ()


@dataclass(frozen=True, slots=True)
class Opened:
    """What the lock's reads found."""

    head: tuple[int, str] | None  # (seq, hash) of the last event; None for an empty log
    logged: dict[IdempotencyKey, LoggedEvent]
    latest: Mapping[WindowBucket, list[TouchRow]]
    earliest: Mapping[WindowBucket, list[TouchRow]]


@lru_cache(maxsize=4096)
def _json_list(items: tuple[str, ...]) -> str:
    # Lists of names repeat (roles, reason codes, flags): encode each distinct one once.
    return json.dumps(list(items))


def _stored_json(value: Any) -> str:
    """JSON text as SQLAlchemy's JSON type stores it (`json.dumps`, its default form)."""
    if isinstance(value, list):
        return _json_list(tuple(value))
    return "{}" if not value else json.dumps(value)


class AppendStore:
    """The append path's queries for one kind of database."""

    def __init__(self, engine: Engine) -> None:
        self._dialect = engine.dialect
        self._errors: type[Exception] = engine.dialect.loaded_dbapi.Error

    def storage_row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """An event's values in `EVENT_FIELDS` order (timestamps as their canonical text)
        turned into what the driver inserts."""
        raise NotImplementedError

    def open(
        self,
        session: Session,
        lock_timeout: float,
        keys: Collection[IdempotencyKey],
        windows: WindowReads,
    ) -> Opened:
        """Take the append lock for the rest of the transaction, then read the head, the
        events logged under `keys` and the volume rows `windows` asks for."""
        raise NotImplementedError

    def insert(
        self,
        session: Session,
        rows: Sequence[tuple[Any, ...]],
        touches: Sequence[TouchUpkeep],
        tree: Sequence[StoredHash],
    ) -> None:
        """Insert events (rows of `storage_row`), keep the volume summary up to date and
        store the tree's new hashes."""
        raise NotImplementedError

    def stored_hashes(self, session: Session, level: int, start: int, end: int) -> list[bytes]:
        """The tree's stored hashes of tile level `level`, positions start … end - 1."""
        try:
            rows = self._driver(session).execute(self._STORED, (level, start, end)).fetchall()
        except self._errors as exc:
            raise self._wrapped(exc) from exc
        return [bytes(row[0]) for row in rows]

    _STORED: str  # the statement of `stored_hashes`, in the driver's parameter style

    def rebuild_windows(self, session: Session, width: int) -> None:
        """Recompute the volume summary for `width` from the log; every other width goes."""
        raise NotImplementedError

    def _driver(self, session: Session) -> Any:
        """The session's own driver connection (in the session's transaction)."""
        return session.connection().connection.driver_connection

    def _wrapped(self, error: Exception) -> Exception:
        """A driver error as SQLAlchemy raises it (its OperationalError, IntegrityError…)."""
        return DBAPIError.instance(None, None, error, self._errors, dialect=self._dialect)

    def _rebuild(self, session: Session, width: int, microseconds: str) -> None:
        connection = session.connection()
        connection.exec_driver_sql("DELETE FROM volume_widths")
        connection.exec_driver_sql("DELETE FROM volume_touches")
        connection.exec_driver_sql(
            _REBUILD.format(width=int(width), width_us=int(width) * 1_000_000, us=microseconds)
        )


# The summary of one width, from the log: access events grouped by actor, bucket, record.
_REBUILD = (
    "INSERT INTO volume_touches (actor, width, bucket, record_type, record_id, first_us, "
    "last_us) SELECT actor, {width}, {us} / {width_us}, record_type, record_id, min({us}), "
    "max({us}) FROM events WHERE kind IN ('decision', 'report') AND actor IS NOT NULL AND "
    "record_type IS NOT NULL AND record_id IS NOT NULL "
    "GROUP BY actor, {us} / {width_us}, record_type, record_id"
)
_UPKEEP = (
    "INSERT INTO volume_touches (actor, width, bucket, record_type, record_id, first_us, "
    "last_us) VALUES ({marks}) ON CONFLICT (actor, width, bucket, record_type, record_id) "
    "DO UPDATE SET first_us = {least}(volume_touches.first_us, excluded.first_us), "
    "last_us = {greatest}(volume_touches.last_us, excluded.last_us)"
)
_HEAD = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
_STORED_HASHES = (
    "SELECT hash FROM tree_hashes WHERE tile_level = {mark} AND position >= {mark} "
    "AND position < {mark} ORDER BY position"
)


def _by_source(keys: Iterable[IdempotencyKey]) -> list[tuple[str, list[str]]]:
    by_source: dict[str, set[str]] = {}
    for source, client_event_id in keys:
        by_source.setdefault(source, set()).add(client_event_id)
    return [(source, sorted(ids)) for source, ids in sorted(by_source.items())]


def _logged(row: Sequence[Any], decode_json: bool) -> LoggedEvent:
    values = list(row)
    if decode_json:
        for i in _LOGGED_JSON:
            values[i] = json.loads(values[i])
    return LoggedEvent(*values)


class _OnDemand(dict[WindowBucket, list[TouchRow]]):
    """Buckets' rows, each read the first time it is asked for."""

    def __init__(self, read: Callable[[WindowBucket], list[TouchRow]]) -> None:
        super().__init__()
        self._read = read

    def __missing__(self, bucket: WindowBucket) -> list[TouchRow]:
        rows = self[bucket] = self._read(bucket)
        return rows


class SqliteStore(AppendStore):
    """SQLite: timestamps as `YYYY-MM-DD HH:MM:SS.ffffff` text, JSON as its text."""

    # One statement text for any number of ids (a JSON array): prepared once, and each id
    # is a lookup in the unique (source, client_event_id) index.
    _LOGGED = (
        f"SELECT {', '.join(LOGGED_COLUMNS)} FROM events WHERE source = ? AND "
        "client_event_id IN (SELECT value FROM json_each(?))"
    )
    _WINDOW = (
        "SELECT record_type, record_id, first_us, last_us FROM volume_touches "
        "WHERE actor = ? AND width = ? AND bucket = ? ORDER BY {order} LIMIT ?"
    )
    _LATEST = _WINDOW.format(order="last_us DESC")
    _EARLIEST = _WINDOW.format(order="first_us")
    _INSERT = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * len(EVENT_FIELDS))})"
    _UPKEEP = _UPKEEP.format(marks=", ".join("?" * 7), least="min", greatest="max")
    _TREE = "INSERT INTO tree_hashes (tile_level, position, hash) VALUES (?, ?, ?)"
    _STORED = _STORED_HASHES.format(mark="?")

    def storage_row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        row = list(values)
        for i in _TIMESTAMPS:
            text = row[i]
            row[i] = text[:10] + " " + text[11:26]
        for i in _JSON:
            row[i] = _stored_json(row[i])
        return tuple(row)

    def open(
        self,
        session: Session,
        lock_timeout: float,
        keys: Collection[IdempotencyKey],
        windows: WindowReads,
    ) -> Opened:
        # The write lock itself was taken at BEGIN (writer sessions begin IMMEDIATE).
        driver = self._driver(session)
        try:
            head = driver.execute(_HEAD).fetchone()
            logged: dict[IdempotencyKey, LoggedEvent] = {}
            for source, ids in _by_source(keys):
                for row in driver.execute(self._LOGGED, (source, json.dumps(ids))):
                    event = _logged(row, decode_json=True)
                    logged[(event.source, event.client_event_id)] = event
        except self._errors as exc:
            raise self._wrapped(exc) from exc

        def reader(statement: str) -> Callable[[WindowBucket], list[TouchRow]]:
            def read(bucket: WindowBucket) -> list[TouchRow]:
                try:
                    rows: list[TouchRow] = driver.execute(
                        statement, (bucket[0], windows.width, bucket[1], windows.limit)
                    ).fetchall()
                except self._errors as exc:
                    raise self._wrapped(exc) from exc
                return rows

            return read

        # In process, a bucket is read when a count first needs it (a count that reaches
        # the limit in the bucket of its instant never reads the one before).
        return Opened(
            head=(head[0], head[1]) if head else None,
            logged=logged,
            latest=_OnDemand(reader(self._LATEST)),
            earliest=_OnDemand(reader(self._EARLIEST)),
        )

    def insert(
        self,
        session: Session,
        rows: Sequence[tuple[Any, ...]],
        touches: Sequence[TouchUpkeep],
        tree: Sequence[StoredHash],
    ) -> None:
        driver = self._driver(session)
        try:
            driver.executemany(self._INSERT, rows)
            if touches:
                driver.executemany(self._UPKEEP, touches)
            driver.executemany(self._TREE, tree)
        except self._errors as exc:
            raise self._wrapped(exc) from exc

    def rebuild_windows(self, session: Session, width: int) -> None:
        # SQLAlchemy stores `YYYY-MM-DD HH:MM:SS.ffffff` (UTC): whole seconds, then micros.
        self._rebuild(
            session,
            width,
            "(CAST(strftime('%s', occurred_at) AS INTEGER) * 1000000 "
            "+ CAST(substr(occurred_at, 21, 6) AS INTEGER))",
        )


class PostgresStore(AppendStore):
    """PostgreSQL: timestamps and JSON as their text, which the server parses."""

    # The timeout and the lock in one statement (the select list is evaluated in order).
    _LOCK = "SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(%s)"
    # One unique-index lookup per id, whatever the statistics say: with an IN list or an
    # array a fresh or not yet analysed table made the planner scan every event of the
    # source.
    _LOGGED = (
        f"SELECT {', '.join('k.' + c for c in LOGGED_COLUMNS)} FROM unnest(%s::text[]) AS "
        f"wanted(id) CROSS JOIN LATERAL (SELECT {', '.join(LOGGED_COLUMNS)} FROM events "
        "WHERE source = %s AND client_event_id = wanted.id LIMIT 1) AS k"
    )
    # Every asked bucket in one statement; each is one walk of a summary index.
    _WINDOW = (
        "SELECT w.actor, w.bucket, t.record_type, t.record_id, t.first_us, t.last_us "
        "FROM unnest(%s::text[], %s::bigint[]) AS w(actor, bucket) CROSS JOIN LATERAL "
        "(SELECT record_type, record_id, first_us, last_us FROM volume_touches v "
        "WHERE v.actor = w.actor AND v.width = %s AND v.bucket = w.bucket "
        "ORDER BY {order} LIMIT %s) AS t"
    )
    _LATEST = _WINDOW.format(order="v.last_us DESC")
    _EARLIEST = _WINDOW.format(order="v.first_us")
    _COPY = f"COPY events ({_EVENT_COLUMNS}) FROM STDIN"
    # One statement for the whole list (its keys are distinct: ON CONFLICT may touch a row
    # once): per-row statements cost the backend and the driver about twice as much.
    _UPKEEP = _UPKEEP.replace("VALUES ({marks})", (
        "SELECT * FROM unnest(%s::text[], %s::integer[], %s::bigint[], %s::text[], "
        "%s::text[], %s::bigint[], %s::bigint[])"
    )).format(least="LEAST", greatest="GREATEST")  # fmt: skip
    _TREE = (
        "INSERT INTO tree_hashes (tile_level, position, hash) "
        "SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[])"
    )
    _STORED = _STORED_HASHES.format(mark="%s")

    def storage_row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        row = list(values)  # the canonical timestamp text is a valid timestamptz
        for i in _JSON:
            row[i] = _stored_json(row[i])
        return tuple(row)

    def open(
        self,
        session: Session,
        lock_timeout: float,
        keys: Collection[IdempotencyKey],
        windows: WindowReads,
    ) -> Opened:
        driver = self._driver(session)
        by_source = _by_source(keys)
        asked = [
            (statement, sorted(buckets))
            for statement, buckets in (
                (self._LATEST, windows.latest),
                (self._EARLIEST, windows.earliest),
            )
        ]
        try:
            with driver.pipeline():
                driver.execute(self._LOCK, (f"{int(lock_timeout * 1000)}ms", LEDGER_LOCK_KEY))
                head_cursor = driver.execute(_HEAD)
                logged_cursors = [
                    driver.execute(self._LOGGED, (ids, source)) for source, ids in by_source
                ]
                window_cursors = [
                    driver.execute(statement, (
                        [actor for actor, _ in buckets], [bucket for _, bucket in buckets],
                        windows.width, windows.limit,
                    )) if buckets else None
                    for statement, buckets in asked
                ]  # fmt: skip
            head = head_cursor.fetchone()
            logged: dict[IdempotencyKey, LoggedEvent] = {}
            for cursor in logged_cursors:
                for row in cursor.fetchall():
                    event = _logged(row, decode_json=False)
                    logged[(event.source, event.client_event_id)] = event
            found: list[dict[WindowBucket, list[TouchRow]]] = []
            for (_, buckets), cursor in zip(asked, window_cursors, strict=True):
                rows: dict[WindowBucket, list[TouchRow]] = {bucket: [] for bucket in buckets}
                for actor, bucket, record_type, record_id, first_us, last_us in (
                    cursor.fetchall() if cursor is not None else ()
                ):
                    rows[(actor, bucket)].append((record_type, record_id, first_us, last_us))
                found.append(rows)
        except self._errors as exc:
            raise self._wrapped(exc) from exc
        latest, earliest = found
        # Each bucket's rows in its walk's order (the join itself promises no order).
        for touches in latest.values():
            touches.sort(key=lambda row: -row[3])
        for touches in earliest.values():
            touches.sort(key=lambda row: row[2])
        return Opened(
            head=(head[0], head[1]) if head else None,
            logged=logged,
            latest=latest,
            earliest=earliest,
        )

    def insert(
        self,
        session: Session,
        rows: Sequence[tuple[Any, ...]],
        touches: Sequence[TouchUpkeep],
        tree: Sequence[StoredHash],
    ) -> None:
        driver = self._driver(session)
        try:
            with driver.cursor() as cursor:
                with cursor.copy(self._COPY) as copy:
                    for row in rows:
                        copy.write_row(row)
                if touches:
                    cursor.execute(
                        self._UPKEEP, [list(column) for column in zip(*touches, strict=True)]
                    )
                if tree:
                    cursor.execute(self._TREE, [list(column) for column in zip(*tree, strict=True)])
        except self._errors as exc:
            raise self._wrapped(exc) from exc

    def rebuild_windows(self, session: Session, width: int) -> None:
        self._rebuild(session, width, "(extract(epoch FROM occurred_at) * 1000000)::bigint")


def store_for(engine: Engine) -> AppendStore:
    """The append path's strategy for the engine's database (chosen once, at start-up)."""
    return SqliteStore(engine) if engine.dialect.name == "sqlite" else PostgresStore(engine)
