"""Ledger tables: events (hash-chained), checkpoints (signed heads), signing keys, the
Merkle tree over the events with its signed tree checkpoints, and the volume-window
summary the ledger keeps beside the events.

`Event` is the one declaration of an event's fields: their names, order (contract section
7: the hashed fields, the chain, then the fields that follow), types and meaning. The
canonical form, the CSV columns and the read schemas are derived from it
(`EVENT_FIELDS` and the sets below).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONList, UTCDateTime

LIST = {"form": "list"}  # a JSON list of strings (`info` of a column)


class Event(Base):
    """One audit event. Rows are only ever inserted; the database refuses UPDATE/DELETE."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "client_event_id"),
        Index("ix_events_actor_occurred_at", "actor", "occurred_at"),
        Index("ix_events_record", "record_type", "record_id", "seq"),
        Index("ix_events_facility_occurred_at", "facility", "occurred_at"),
        # Widened by migration 0003 so that the reports over a period read the index alone.
        Index("ix_events_occurred_at", "occurred_at", "kind", "facility", "decision", "flags"),
        Index("ix_events_kind_seq", "kind", "seq"),
        Index("ix_events_decision_seq", "decision", "seq"),
        # Oversight (migration 0003): pages by category and the mission-creep report; the
        # flagged events (a partial index: a small share of the log) for the flags report.
        Index("ix_events_category_seq", "action_category", "seq"),
        Index(
            "ix_events_flagged",
            "seq",
            "occurred_at",
            "kind",
            sqlite_where=text("flags != '[]'"),
            postgresql_where=text("flags <> '[]'::jsonb"),
        ),
    )

    seq: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, doc="position in the log, from 1, no gaps"
    )
    event_id: Mapped[str] = mapped_column(String(36), unique=True, doc="UUID of the event")
    kind: Mapped[str] = mapped_column(
        String(16), doc="decision, report, admin, login, export or review"
    )
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, doc="when the log recorded it")
    occurred_at: Mapped[datetime] = mapped_column(
        UTCDateTime, doc="when the access happened (a decision: when it was asked)"
    )
    actor: Mapped[str | None] = mapped_column(String(128), doc="who acted, as sent")
    actor_roles: Mapped[list[str]] = mapped_column(
        JSONList, info=LIST, doc="the actor's roles at that moment"
    )
    action: Mapped[str | None] = mapped_column(String(64), doc="e.g. `read_case`, `arrest`")
    action_category: Mapped[str | None] = mapped_column(
        String(32), doc="the action's category in the policy (null for an unknown action)"
    )
    record_type: Mapped[str | None] = mapped_column(String(64), doc="e.g. `detainee_case`")
    record_id: Mapped[str | None] = mapped_column(String(128), doc="e.g. `GRN-2025-00042`")
    facility: Mapped[str | None] = mapped_column(String(64), doc="facility key, e.g. `greene`")
    purpose: Mapped[str | None] = mapped_column(String(64), doc="why, e.g. `case_update`")
    justification: Mapped[str | None] = mapped_column(Text, doc="free text sent with it")
    break_glass: Mapped[bool | None] = mapped_column(Boolean, doc="emergency access asked")
    decision: Mapped[str | None] = mapped_column(String(8), doc="`allow` or `deny`")
    reasons: Mapped[list[str]] = mapped_column(
        JSONList, info=LIST, doc="every deny reason that applied"
    )
    flags: Mapped[list[str]] = mapped_column(JSONList, info=LIST, doc="marks for oversight")
    source: Mapped[str | None] = mapped_column(String(128), doc="client or user that sent it")
    client_event_id: Mapped[str | None] = mapped_column(
        String(128), doc="the sender's own id (idempotency)"
    )
    policy_version: Mapped[str | None] = mapped_column(
        String(80), doc="`sha256:` of the policy that judged it"
    )
    prev_hash: Mapped[str] = mapped_column(String(64), doc="hash of the previous event")
    hash: Mapped[str] = mapped_column(
        String(64), unique=True, doc="SHA-256(prev_hash || canonical form)"
    )
    workstation: Mapped[str | None] = mapped_column(String(128), doc="terminal or device id")
    source_ip: Mapped[str | None] = mapped_column(String(64), doc="the sender's address")
    details: Mapped[dict[str, Any]] = mapped_column(
        JSONList, doc="more, by kind: reason messages, changes, filters…"
    )


# The fields of an event in contract order (also the CSV columns).
EVENT_FIELDS: Final = tuple(column.name for column in Event.__table__.columns)
CHAIN_FIELDS: Final = ("prev_hash", "hash")
# The fields the hash covers: every field but the chain itself.
HASHED_FIELDS: Final = tuple(name for name in EVENT_FIELDS if name not in CHAIN_FIELDS)
TIMESTAMP_FIELDS: Final = frozenset(
    column.name for column in Event.__table__.columns if isinstance(column.type, UTCDateTime)
)
LIST_FIELDS: Final = frozenset(
    column.name for column in Event.__table__.columns if column.info == LIST
)
JSON_FIELDS: Final = LIST_FIELDS | {"details"}
# Filled in by the ledger when it appends; the rest come from whoever logs the event.
ASSIGNED_FIELDS: Final = ("seq", "event_id", "recorded_at", *CHAIN_FIELDS)
CONTENT_FIELDS: Final = tuple(name for name in EVENT_FIELDS if name not in ASSIGNED_FIELDS)


class Checkpoint(Base):
    """A signed chain head: Ed25519 over (seq, hash, signed_at, key_id)."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(128))


class SigningKey(Base):
    """Every public key that ever signed, by id, so old checkpoints stay verifiable."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VolumeTouch(Base):
    """Which records an actor's access events touched, per bucket of time: a summary of the
    log kept at append, in the appending transaction, so that "how many distinct records
    did this actor touch in the trailing window" is answered with work bounded by the
    volume limit, not by the actor's activity (docs/operations.md, "Volume windows").

    A bucket is `width` seconds of time (the window's width; bucket n covers
    [n * width, (n + 1) * width)); a row says the actor touched the record at least once
    in it, first at `first_us` and last at `last_us` (microseconds since the epoch, UTC).
    Derived from `events` alone: it can be rebuilt from them at any time.
    """

    __tablename__ = "volume_touches"
    __table_args__ = (
        Index("ix_volume_touches_last", "actor", "width", "bucket", "last_us"),
        Index("ix_volume_touches_first", "actor", "width", "bucket", "first_us"),
    )

    actor: Mapped[str] = mapped_column(String(128), primary_key=True)
    width: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    record_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_us: Mapped[int] = mapped_column(BigInteger)
    last_us: Mapped[int] = mapped_column(BigInteger)


class VolumeWidth(Base):
    """A window width the summary is kept for, and since when (the seq it was built to)."""

    __tablename__ = "volume_widths"

    width: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    built_through_seq: Mapped[int] = mapped_column(Integer)


class TreeHash(Base):
    """The Merkle tree over the events (docs/integrity.md, "The tree"): exactly the hashes
    that C2SP tiles carry. Tile level 0 holds the leaf hashes (`position` = seq - 1); tile
    level L the hash of each complete subtree of 256**L leaves (position N: leaves from
    N * 256**L). Tile L/N is positions N*256 … N*256+255 of level L; the levels between are
    rebuilt from these when a proof needs them. Kept at append, in the appending
    transaction; derived from the events alone, and only ever inserted.
    """

    __tablename__ = "tree_hashes"
    __table_args__ = ({"sqlite_with_rowid": False},)

    tile_level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    authenticator: Mapped[bytes | None] = mapped_column(
        LargeBinary(36),
        doc="a leaf's: the signing key's 4-byte tag and HMAC-SHA256 of the leaf hash under a "
        "key derived from it (docs/integrity.md, Authenticated events); null above level 0",
    )


class TreeCheckpoint(Base):
    """A C2SP checkpoint of the tree: the signed note (origin, size, root) as the log signed
    it. Published within AUDIT_CHECKPOINT_SECONDS of any commit; never overwritten."""

    __tablename__ = "tree_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text, doc="the signed note, the log's signature only")
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, doc="when it was really signed")


class TreeCosignature(Base):
    """A witness's cosignature (C2SP tlog-cosignature) of the checkpoint of `size`: the
    signature line as the witness sent it, checked against its vkey before it was kept."""

    __tablename__ = "tree_cosignatures"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    witness: Mapped[str] = mapped_column(String(255), primary_key=True, doc="its key name")
    line: Mapped[str] = mapped_column(Text, doc="`— <name> base64(key id || timestamp || sig)`")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LogSetting(Base):
    """Facts about this log fixed once and kept with it (the generated origin)."""

    __tablename__ = "log_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
