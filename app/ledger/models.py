"""Ledger tables: events (hash-chained), checkpoints (signed heads), signing keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONList, UTCDateTime


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

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str | None] = mapped_column(String(128))
    actor_roles: Mapped[list[str]] = mapped_column(JSONList)
    action: Mapped[str | None] = mapped_column(String(64))
    action_category: Mapped[str | None] = mapped_column(String(32))
    record_type: Mapped[str | None] = mapped_column(String(64))
    record_id: Mapped[str | None] = mapped_column(String(128))
    facility: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str | None] = mapped_column(String(64))
    justification: Mapped[str | None] = mapped_column(Text)
    break_glass: Mapped[bool | None] = mapped_column(Boolean)
    decision: Mapped[str | None] = mapped_column(String(8))
    reasons: Mapped[list[str]] = mapped_column(JSONList)
    flags: Mapped[list[str]] = mapped_column(JSONList)
    source: Mapped[str | None] = mapped_column(String(128))
    client_event_id: Mapped[str | None] = mapped_column(String(128))
    policy_version: Mapped[str | None] = mapped_column(String(80))
    workstation: Mapped[str | None] = mapped_column(String(128))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONList)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


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
