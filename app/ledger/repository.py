"""Every query of the ledger: the append path, checkpoints, keys, and the verifier's stream."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.orm import Session

from app.db import Read, is_sqlite
from app.ledger.canonical import CANONICAL_ORDER, LIST_FIELDS, TIMESTAMP_FIELDS
from app.ledger.models import Checkpoint, Event, SigningKey

# One constant key for the transaction-scoped advisory lock that serialises appends.
LEDGER_LOCK_KEY = 0x6C6564676572  # "ledger"

# The append path's statements, built once (Core): they run on every decision.
_events = Event.metadata.tables[Event.__tablename__]
# The timeout and the lock in one round trip (the select list is evaluated in order).
_PG_LOCK = text("SELECT set_config('lock_timeout', :timeout, true), pg_advisory_xact_lock(:key)")
_HEAD = select(_events.c.seq, _events.c.hash).order_by(_events.c.seq.desc()).limit(1)
_KNOWN_SEQS = select(_events.c.seq).where(
    _events.c.source == bindparam("source"),
    _events.c.client_event_id.in_(bindparam("ids", expanding=True)),
)
# PostgreSQL: one unique-index lookup per id, whatever the statistics say. With the IN form
# a fresh or not yet analysed table makes the planner scan every event of the source.
_PG_KNOWN_SEQS = text(
    "SELECT known.seq FROM unnest(CAST(:ids AS text[])) AS wanted(id) CROSS JOIN LATERAL "
    "(SELECT seq FROM events WHERE source = :source AND client_event_id = wanted.id "
    "LIMIT 1) AS known"
)


def lock_reads(session: Session, timeout_seconds: float) -> list[Read]:
    """What takes the append lock: PostgreSQL, an advisory xact lock (waiting at most the
    timeout). SQLite needs nothing here: writers open their transaction with BEGIN IMMEDIATE.
    """
    if is_sqlite(session):
        return []
    return [(_PG_LOCK, {"timeout": f"{int(timeout_seconds * 1000)}ms", "key": LEDGER_LOCK_KEY})]


# (seq, hash) of the last event: no rows for an empty log.
HEAD_READ: Read = (_HEAD, {})


def head(session: Session) -> tuple[int, str] | None:
    """(seq, hash) of the last event, or None for an empty log."""
    row = session.execute(_HEAD).first()
    return (row.seq, row.hash) if row else None


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    # A Core insert of the table, not the ORM bulk path: that one splits the rows by which
    # values are None and sends one executemany per pattern (a dozen per batch of reports).
    session.execute(insert(_events), list(rows))


def insert_checkpoints(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    session.execute(insert(Checkpoint), list(rows))


def key_registered(session: Session, key_id: str) -> bool:
    return session.get(SigningKey, key_id) is not None


def register_key(session: Session, row: dict[str, Any]) -> None:
    session.execute(insert(SigningKey), [row])


def known_seq_reads(session: Session, keys: Iterable[tuple[str, str]]) -> list[Read]:
    """Reads that find the seq of each event already recorded under one of these
    (source, client_event_id) pairs; `events_at` then loads them."""
    by_source: dict[str, set[str]] = {}
    for source, client_event_id in keys:
        by_source.setdefault(source, set()).add(client_event_id)
    postgresql = not is_sqlite(session)
    reads: list[Read] = []
    for source, ids in sorted(by_source.items()):
        # One source and its ids walk the unique (source, client_event_id) index; a
        # row-value IN of 500 pairs cost far more to plan than to run. SQLite (no arrays):
        # an IN list per 500 ids.
        ordered = sorted(ids)
        step = len(ordered) if postgresql else 500
        for start in range(0, len(ordered), step):
            chunk = ordered[start : start + step]
            probe = _PG_KNOWN_SEQS if postgresql else _KNOWN_SEQS
            reads.append((probe, {"source": source, "ids": chunk}))
    return reads


def events_at(session: Session, seqs: Collection[int]) -> dict[tuple[str, str], Event]:
    """The events at `seqs` (found by `known_seq_reads`), by (source, client_event_id)."""
    found: dict[tuple[str, str], Event] = {}
    if not seqs:
        return found
    for event in session.scalars(select(Event).where(Event.seq.in_(sorted(seqs)))):
        assert event.source is not None
        assert event.client_event_id is not None
        found[(event.source, event.client_event_id)] = event
    return found


# The verifier reads each hashed column in the form the canonical encoding needs, so that
# per-row Python stays minimal: timestamps as canonical text made by the database, JSON
# columns as their JSON text (parsed by the verifier), everything else as stored.
CHAIN_COLUMNS: tuple[str, ...] = (*CANONICAL_ORDER, "prev_hash", "hash")
JSON_FIELDS = LIST_FIELDS | {"details"}


def _canonical_timestamp(column: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """A UTC timestamp column as `YYYY-MM-DDTHH:MM:SS.ffffffZ` text."""
    if dialect == "postgresql":
        return func.to_char(
            func.timezone("UTC", column), literal_column('\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\'')
        )
    # SQLite holds UTC as `YYYY-MM-DD HH:MM:SS.ffffff` text (SQLAlchemy's storage format).
    return func.replace(column, literal_column("' '"), literal_column("'T'")).concat(
        literal_column("'Z'")
    )


def chain_batches(
    session: Session, first: int, last: int | None, batch_size: int
) -> Iterator[Sequence[Sequence[Any]]]:
    """Rows of `CHAIN_COLUMNS` in seq order from `first` to `last`, in batches.

    Streamed from a server-side cursor (`yield_per`), so memory does not grow with the log.
    """
    table = Event.__table__
    dialect = session.get_bind().dialect.name
    columns: list[ColumnElement[Any]] = []
    for name in CANONICAL_ORDER:
        column = table.c[name]
        if name in TIMESTAMP_FIELDS:
            columns.append(_canonical_timestamp(column, dialect))
        elif name in JSON_FIELDS:
            columns.append(cast(column, Text))
        else:
            columns.append(column)
    columns += [table.c.prev_hash, table.c.hash]
    query = select(*columns).where(table.c.seq >= first).order_by(table.c.seq)
    if last is not None:
        query = query.where(table.c.seq <= last)
    result = session.execute(query.execution_options(yield_per=batch_size))
    try:
        yield from result.partitions()
    finally:
        result.close()


def next_seq_after(session: Session, seq: int) -> int | None:
    """The lowest seq above `seq`, if any."""
    return session.scalar(select(func.min(Event.seq)).where(Event.seq > seq))


def checkpoints_between(session: Session, first: int, last: int | None) -> list[Any]:
    """(seq, hash, signed_at, key_id, signature) of checkpoints in a seq range, by seq."""
    query = select(
        Checkpoint.seq, Checkpoint.hash, Checkpoint.signed_at, Checkpoint.key_id,
        Checkpoint.signature,
    ).where(Checkpoint.seq >= first)  # fmt: skip
    if last is not None:
        query = query.where(Checkpoint.seq <= last)
    return list(session.execute(query.order_by(Checkpoint.seq, Checkpoint.id)))


def last_checkpoint_before(session: Session, seq: int) -> int | None:
    """The highest checkpointed seq below `seq`, if any."""
    return session.scalar(select(func.max(Checkpoint.seq)).where(Checkpoint.seq < seq))


def checkpoints_page(
    session: Session, *, newest_first: bool, after_id: int | None, limit: int
) -> list[Checkpoint]:
    """Checkpoints in signing order (by id), a page after the id `after_id`."""
    query = select(Checkpoint)
    if newest_first:
        if after_id is not None:
            query = query.where(Checkpoint.id < after_id)
        query = query.order_by(Checkpoint.id.desc())
    else:
        if after_id is not None:
            query = query.where(Checkpoint.id > after_id)
        query = query.order_by(Checkpoint.id)
    return list(session.scalars(query.limit(limit)))


def signing_keys(session: Session) -> list[SigningKey]:
    """Every public key that ever signed, oldest first."""
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at)))


def signing_key(session: Session, key_id: str) -> SigningKey | None:
    return session.get(SigningKey, key_id)
