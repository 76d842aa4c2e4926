"""The ledger's portable queries: the head, checkpoints, keys, the volume registry and the
verifier's stream. (The append path's own queries are in `append_store`.)"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, delete, func, insert, literal_column, select
from sqlalchemy.orm import Session

from app.ledger.canonical import CANONICAL_ORDER, encode_canonical
from app.ledger.models import (
    JSON_FIELDS,
    TIMESTAMP_FIELDS,
    Checkpoint,
    Event,
    LogSetting,
    SigningKey,
    TreeCheckpoint,
    TreeHash,
    VolumeWidth,
)

_events = Event.metadata.tables[Event.__tablename__]
_HEAD = select(_events.c.seq, _events.c.hash).order_by(_events.c.seq.desc()).limit(1)


def head(session: Session) -> tuple[int, str] | None:
    """(seq, hash) of the last event, or None for an empty log."""
    row = session.execute(_HEAD).first()
    return (row.seq, row.hash) if row else None


def insert_checkpoints(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    session.execute(insert(Checkpoint), list(rows))


def key_registered(session: Session, key_id: str) -> bool:
    return session.get(SigningKey, key_id) is not None


def register_key(session: Session, row: dict[str, Any]) -> None:
    session.execute(insert(SigningKey), [row])


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
    session: Session, first: int, last: int | None, batch_size: int, leaves: bool = False
) -> Iterator[Sequence[Sequence[Any]]]:
    """Rows of the hashed fields in `CANONICAL_ORDER`, then prev_hash and hash, in seq
    order from `first` to `last`, in batches; with `leaves`, then the event's leaf hash
    and authenticator as the tree stores them (None where the tree has no leaf).

    Each column comes in the form the canonical encoding needs, so that the verifier's
    per-row Python stays minimal: timestamps as canonical text made by the database, JSON
    columns as their JSON text, everything else as stored. Streamed from a server-side
    cursor (`yield_per`), so memory does not grow with the log.
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
    query = select(*columns)
    if leaves:
        tree = TreeHash.__table__
        query = query.add_columns(tree.c.hash, tree.c.authenticator).outerjoin(
            tree, (tree.c.tile_level == 0) & (tree.c.position == table.c.seq - 1)
        )
    query = query.where(table.c.seq >= first).order_by(table.c.seq)
    if last is not None:
        query = query.where(table.c.seq <= last)
    result = session.execute(query.execution_options(yield_per=batch_size))
    try:
        yield from result.partitions()
    finally:
        result.close()


def canonical_forms(session: Session, first: int, last: int) -> Iterator[tuple[int, bytes]]:
    """(seq, canonical bytes) of the events `first` … `last`, in seq order: the tree's
    leaves, as the append encoded them (docs/integrity.md §1)."""
    for seq, canonical, _, _ in stored_leaves(session, first, last, leaves=False):
        yield seq, canonical


def stored_leaves(
    session: Session, first: int, last: int, leaves: bool = True
) -> Iterator[tuple[int, bytes, bytes | None, bytes | None]]:
    """(seq, canonical bytes, the tree's leaf hash, its authenticator) of the events
    `first` … `last` in seq order, streamed (None for what the tree lacks)."""
    json_at = [i for i, name in enumerate(CANONICAL_ORDER) if name in JSON_FIELDS]
    width = len(CANONICAL_ORDER)
    for batch in chain_batches(session, first, last, batch_size=1000, leaves=leaves):
        for row in batch:
            values = list(row[:width])
            for i in json_at:
                values[i] = json.loads(values[i])
            body = dict(zip(CANONICAL_ORDER, values, strict=True))
            leaf, mark = (row[width + 2], row[width + 3]) if leaves else (None, None)
            yield (
                body["seq"],
                encode_canonical(body),
                None if leaf is None else bytes(leaf),
                None if mark is None else bytes(mark),
            )


AUTHENTICATED_FROM = "authenticated_from_seq"  # a `log_settings` name (migration 0005)


def authenticated_from(session: Session) -> int:
    """The first seq written with an authenticator (a log older than them starts later)."""
    stored = session.get(LogSetting, AUTHENTICATED_FROM)
    return int(stored.value) if stored is not None else 1


def log_origin(session: Session) -> str | None:
    """The origin generated for this log and kept with it, if any."""
    stored = session.get(LogSetting, "origin")
    return stored.value if stored is not None else None


def tree_checkpoints(session: Session) -> list[tuple[int, str]]:
    """(size, note) of every tree checkpoint, by size."""
    query = select(TreeCheckpoint.size, TreeCheckpoint.note).order_by(TreeCheckpoint.size)
    return [(row.size, row.note) for row in session.execute(query)]


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


def volume_widths(session: Session) -> list[int]:
    """The window widths the volume summary is kept for."""
    return list(session.scalars(select(VolumeWidth.width)))


def register_width(session: Session, width: int, built_through_seq: int) -> None:
    session.execute(delete(VolumeWidth))
    session.execute(insert(VolumeWidth), [{"width": width, "built_through_seq": built_through_seq}])
