"""Appending to the hash-chained log, and signing checkpoints."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.errors import LedgerUnavailable
from app.ledger import repository
from app.ledger.canonical import GENESIS_HASH, canonical_bytes, chain_hash
from app.ledger.signing import Signer, checkpoint_message

SESSION_LOCKED = "ledger_locked"
NULLABLE_TEXT = (
    "actor", "action", "action_category", "record_type", "record_id", "facility", "purpose",
    "justification", "source", "client_event_id", "policy_version", "workstation", "source_ip",
)  # fmt: skip


@dataclass(slots=True)
class NewEvent:
    """An event to append; the ledger fills in seq, event_id, recorded_at and the hashes."""

    kind: str
    occurred_at: datetime | None = None
    actor: str | None = None
    actor_roles: list[str] = field(default_factory=list)
    action: str | None = None
    action_category: str | None = None
    record_type: str | None = None
    record_id: str | None = None
    facility: str | None = None
    purpose: str | None = None
    justification: str | None = None
    break_glass: bool | None = None
    decision: str | None = None
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    source: str | None = None
    client_event_id: str | None = None
    policy_version: str | None = None
    workstation: str | None = None
    source_ip: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    event_id: str
    hash: str


def utcnow() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """The append path. Callers pass their session; the request's transaction commits it."""

    def __init__(self, signer: Signer, checkpoint_interval: int, lock_timeout: float) -> None:
        self.signer = signer
        self.checkpoint_interval = checkpoint_interval
        self.lock_timeout = lock_timeout

    def lock(self, session: Session) -> None:
        """Take the append lock for the rest of this transaction (idempotent)."""
        transaction = session.get_transaction()
        if transaction is not None and session.info.get(SESSION_LOCKED) is transaction:
            return
        try:
            repository.lock_for_append(session, self.lock_timeout)
        except DBAPIError as exc:
            raise LedgerUnavailable("the audit log is busy or unavailable; try again") from exc
        session.info[SESSION_LOCKED] = session.get_transaction()

    def append(self, session: Session, now: datetime, events: Sequence[NewEvent]) -> list[Appended]:
        """Chain and insert `events` in order, recorded at `now`.

        A checkpoint is signed at every seq that is a multiple of the interval, inside the
        same transaction, so a committed log never lacks a checkpoint it should have.
        """
        if not events:
            return []
        self.lock(session)
        current = repository.head(session)
        seq, prev = current if current else (0, GENESIS_HASH)
        rows: list[dict[str, Any]] = []
        checkpoints: list[dict[str, Any]] = []
        appended: list[Appended] = []
        for event in events:
            seq += 1
            row: dict[str, Any] = {
                "seq": seq,
                "event_id": str(uuid.uuid4()),
                "kind": event.kind,
                "recorded_at": now,
                "occurred_at": event.occurred_at or now,
                "actor": event.actor,
                "actor_roles": list(event.actor_roles),
                "action": event.action,
                "action_category": event.action_category,
                "record_type": event.record_type,
                "record_id": event.record_id,
                "facility": event.facility,
                "purpose": event.purpose,
                "justification": event.justification,
                "break_glass": event.break_glass,
                "decision": event.decision,
                "reasons": list(event.reasons),
                "flags": list(event.flags),
                "source": event.source,
                "client_event_id": event.client_event_id,
                "policy_version": event.policy_version,
                "workstation": event.workstation,
                "source_ip": event.source_ip,
                "details": event.details,
            }
            # An empty string would read back as null from a CSV cell; store it as null.
            for name in NULLABLE_TEXT:
                if row[name] == "":
                    row[name] = None
            digest = chain_hash(prev, canonical_bytes(row))
            row["prev_hash"] = prev
            row["hash"] = digest
            rows.append(row)
            appended.append(Appended(seq, str(row["event_id"]), digest))
            if seq % self.checkpoint_interval == 0:
                checkpoints.append(self._checkpoint_row(seq, digest, now))
            prev = digest
        repository.insert_events(session, rows)
        if checkpoints:
            self._ensure_key(session)
            repository.insert_checkpoints(session, checkpoints)
        return appended

    def sign_head(self, session: Session, now: datetime) -> dict[str, Any] | None:
        """Sign the current head on demand; None for an empty log."""
        self.lock(session)
        current = repository.head(session)
        if current is None:
            return None
        row = self._checkpoint_row(current[0], current[1], now)
        self._ensure_key(session)
        repository.insert_checkpoints(session, [row])
        return row

    def _checkpoint_row(self, seq: int, digest: str, signed_at: datetime) -> dict[str, Any]:
        key_id = self.signer.key_id
        signature = self.signer.sign(checkpoint_message(seq, digest, signed_at, key_id))
        return {
            "seq": seq,
            "hash": digest,
            "signed_at": signed_at,
            "key_id": key_id,
            "signature": signature,
        }

    def _ensure_key(self, session: Session) -> None:
        # Checked every time (a checkpoint is rare): a cached answer could outlive a rollback.
        if not repository.key_registered(session, self.signer.key_id):
            repository.register_key(
                session,
                {
                    "key_id": self.signer.key_id,
                    "public_key_pem": self.signer.public_key_pem,
                    "created_at": utcnow(),
                },
            )
