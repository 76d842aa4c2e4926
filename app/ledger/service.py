"""Appending to the hash-chained log, signing checkpoints, and the integrity endpoints' rules."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db import Read, read_together
from app.errors import Conflict, Invalid, LedgerUnavailable, NotFound
from app.ledger import repository
from app.ledger.canonical import GENESIS_HASH, canonical_bytes, chain_hash
from app.ledger.models import Checkpoint
from app.ledger.signing import Signer, checkpoint_message
from app.ledger.verify import Verification, verify_chain

log = logging.getLogger("access_audit")

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
class Locked:
    """What `Ledger.lock` read once the append lock was held."""

    head: tuple[int, str] | None  # (seq, hash) of the last event; None for an empty log
    rows: list[list[tuple[Any, ...]]]  # each of the reads' rows, in order


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

    def lock(self, session: Session, reads: Sequence[Read] = ()) -> Locked:
        """Take the append lock for the rest of this transaction (idempotent), then read the
        head and run `reads`: they see every append committed before the lock was granted.

        On PostgreSQL the lock, the head and the reads go in one round trip: a writer holds
        the lock for as few round trips as it can, as every other writer waits for it.
        """
        transaction = session.get_transaction()
        held = transaction is not None and session.info.get(SESSION_LOCKED) is transaction
        taking = [] if held else repository.lock_reads(session, self.lock_timeout)
        try:
            rows = read_together(session, [*taking, repository.HEAD_READ, *reads])
        except DBAPIError as exc:
            raise LedgerUnavailable("the audit log is busy or unavailable; try again") from exc
        session.info[SESSION_LOCKED] = session.get_transaction()
        head = rows[len(taking)]
        return Locked(head=(head[0][0], head[0][1]) if head else None,
                      rows=rows[len(taking) + 1 :])  # fmt: skip

    def append(
        self,
        session: Session,
        now: datetime,
        events: Sequence[NewEvent],
        locked: Locked | None = None,
    ) -> list[Appended]:
        """Chain and insert `events` in order, recorded at `now`.

        `locked` is what `lock` returned in this transaction, when nothing was appended
        since: its head is used instead of being read again. (A stale head cannot break the
        chain: its seqs are taken, and the insert fails on the primary key.)

        A checkpoint is signed at every seq that is a multiple of the interval, inside the
        same transaction, so a committed log never lacks a checkpoint it should have (the
        verifier treats a run of more than 1000 events without one as tampering). Signing
        in-line costs one Ed25519 signature (~50 µs) per 1000 events; signing "just after"
        would need a second writer and leave a window in which a crash loses a checkpoint.
        """
        if not events:
            return []
        current = (locked or self.lock(session)).head
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
            self.publish_key(session)
            repository.insert_checkpoints(session, checkpoints)
        return appended

    def sign_head(self, session: Session, now: datetime) -> dict[str, Any] | None:
        """Sign the current head on demand; None for an empty log."""
        current = self.lock(session).head
        if current is None:
            return None
        row = self._checkpoint_row(current[0], current[1], now)
        self.publish_key(session)
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

    def publish_key(self, session: Session) -> None:
        """Record the signer's public key in `signing_keys` unless it is there already."""
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


def publish_signing_key(sessions: Callable[[], Session], ledger: Ledger) -> None:
    """At start-up: publish the current key before it signs anything (best effort)."""
    try:
        with sessions() as session, session.begin():
            ledger.publish_key(session)
    except DBAPIError as exc:  # another worker published it first, or the database is down
        log.warning("signing key %s not published at start-up: %s", ledger.signer.key_id, exc)


def verify(
    session: Session, ledger: Ledger, from_seq: int | None, to_seq: int | None
) -> Verification:
    """Verify the chain and its checkpoints; the service's own key is trusted as it is."""
    if from_seq is not None and to_seq is not None and from_seq > to_seq:
        raise Invalid(["query", "from_seq"], "from_seq must not be greater than to_seq")
    own_key = {ledger.signer.key_id: ledger.signer.public_key_pem}
    return verify_chain(session, from_seq=from_seq, to_seq=to_seq, trusted_keys=own_key)


def sign_checkpoint(session: Session, ledger: Ledger, now: datetime) -> dict[str, Any]:
    """Sign the current head now; 409 for an empty log."""
    checkpoint = ledger.sign_head(session, now)
    if checkpoint is None:
        raise Conflict("the log is empty: there is no head to sign")
    return checkpoint


def list_checkpoints(
    session: Session, *, newest_first: bool, cursor: str | None, limit: int
) -> tuple[list[Checkpoint], str | None]:
    """A page of checkpoints in signing order and the cursor of the next page."""
    after: int | None = None
    if cursor is not None:
        if not cursor.isdigit():
            raise Invalid(["query", "cursor"], "not a cursor this service issued")
        after = int(cursor)
    rows = repository.checkpoints_page(
        session, newest_first=newest_first, after_id=after, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (str(rows[-1].id) if more and rows else None)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key that signs or once signed; `created_at` is None until it is recorded."""

    key_id: str
    public_key_pem: str
    created_at: datetime | None
    current: bool


def public_keys(session: Session, ledger: Ledger) -> list[PublicKey]:
    """Every key that ever signed, oldest first, and the current one even if not yet recorded."""
    signer = ledger.signer
    keys = [
        PublicKey(row.key_id, row.public_key_pem, row.created_at, row.key_id == signer.key_id)
        for row in repository.signing_keys(session)
    ]
    if not any(key.current for key in keys):
        keys.append(PublicKey(signer.key_id, signer.public_key_pem, None, current=True))
    return keys


def public_key_pem(session: Session, ledger: Ledger, key_id: str | None) -> tuple[str, str]:
    """(key_id, PEM) of the current key, or of the key `key_id`; 404 if it never signed."""
    signer = ledger.signer
    if key_id is None or key_id == signer.key_id:
        return signer.key_id, signer.public_key_pem
    row = repository.signing_key(session, key_id)
    if row is None:
        raise NotFound(f"no signing key {key_id!r}")
    return row.key_id, row.public_key_pem
