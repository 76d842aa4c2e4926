"""Appending to the hash-chained log, signing checkpoints, and the integrity endpoints' rules.

An append happens under the ledger's lock, in the caller's transaction (the request's
transaction commits it, so a failed append leaves nothing behind). `Ledger.lock` takes the
lock and hands back a `LockedAppend`: what the log already holds under the asked
idempotency keys, the volume-window counts, and `append` itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from sqlalchemy import String
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.clock import Clock
from app.errors import Conflict, Invalid, LedgerUnavailable, NotFound
from app.ledger import repository
from app.ledger.append_store import (
    AppendStore,
    IdempotencyKey,
    LoggedEvent,
    Opened,
    TouchUpkeep,
    TreeRow,
    WindowBucket,
    WindowReads,
)
from app.ledger.appended import AppendedLeaves
from app.ledger.canonical import GENESIS_HASH, chain_hash, encode_canonical, format_timestamp
from app.ledger.merkle import ProofError, grow, leaf_hash
from app.ledger.models import CONTENT_FIELDS, EVENT_FIELDS, HASHED_FIELDS, Checkpoint, Event
from app.ledger.note import Verifier
from app.ledger.signing import Authenticator, Signer, checkpoint_message
from app.ledger.verify import TreeChecks, Verification, verify_chain
from app.pagination import Cursors, int_key
from app.vocabulary import ACCESS_KINDS

log = logging.getLogger("access_audit")

# Text fields where an empty string would read back as null from a CSV cell: stored as null.
NULLABLE_TEXT: Final = frozenset(
    column.name
    for column in Event.__table__.columns
    if column.nullable and isinstance(column.type, String) and column.name in CONTENT_FIELDS
)


@dataclass(slots=True)
class NewEvent:
    """An event to append: its content fields (`models.CONTENT_FIELDS`, which a test keeps
    equal to these); the ledger fills in seq, event_id, recorded_at and the chain."""

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


@dataclass(frozen=True, slots=True)
class VolumeRule:
    """What the volume summary counts: distinct records per actor in a trailing `window`,
    counted up to `limit` (work is bounded by it, whatever the actor's activity)."""

    window: timedelta
    limit: int

    @property
    def width(self) -> int:
        """The window in whole seconds: also the width of the summary's buckets."""
        return int(self.window.total_seconds())


# An access to count: (actor, record_type, record_id, occurred_at).
Touch = tuple[str, str, str, datetime]
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ACCESS: Final = frozenset(ACCESS_KINDS)


def microseconds(at: datetime) -> int:
    """`at` as whole microseconds since the epoch (UTC)."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Ledger:
    """The append path: the lock, appends, checkpoints, and the volume summary's upkeep.

    `store` is the database's strategy (`append_store.store_for`), chosen once.
    `signing_clock` stamps checkpoints with the real time they were signed.
    """

    def __init__(
        self,
        store: AppendStore,
        signer: Signer,
        *,
        checkpoint_interval: int,
        lock_timeout: float,
        volume: VolumeRule,
        signing_clock: Clock,
    ) -> None:
        self.store = store
        self.signer = signer
        self.authenticator = Authenticator.of(signer.private_key)
        self.checkpoint_interval = checkpoint_interval
        self.lock_timeout = lock_timeout
        self.volume = volume
        self.signing_clock = signing_clock
        # The leaves this process appended, for the checkpoint publisher (`appended`).
        self.appended = AppendedLeaves()

    def lock(
        self,
        session: Session,
        keys: Collection[IdempotencyKey] = (),
        counted: Iterable[tuple[str, datetime]] = (),
    ) -> LockedAppend:
        """Take the append lock for the rest of this transaction, then read what the log
        holds under `keys` and the volume summary around each (actor, instant) of
        `counted`: they see every append committed before the lock was granted. A
        transaction may lock again (the head is read anew)."""
        width_us = self.volume.width * 1_000_000
        latest: set[WindowBucket] = set()
        earliest: set[WindowBucket] = set()
        for actor, at in counted:
            bucket = microseconds(at) // width_us
            latest.add((actor, bucket - 1))
            earliest.add((actor, bucket))
        reads = WindowReads(self.volume.width, self.volume.limit, latest, earliest)
        try:
            opened = self.store.open(session, self.lock_timeout, keys, reads)
        except OperationalError as exc:  # the lock timed out, or the database is unreachable
            raise LedgerUnavailable("the audit log is busy or unavailable; try again") from exc
        return LockedAppend(self, session, opened)

    def probe_write(self, session: Session) -> None:
        """Take the append lock and try a write that changes nothing (readiness); raises
        when the log could not be appended to. The caller rolls back."""
        self.lock(session)
        self.store.probe_write(session)

    def append(self, session: Session, now: datetime, events: Sequence[NewEvent]) -> list[Appended]:
        """Lock, then append `events` in order, recorded at `now`."""
        return self.lock(session).append(now, events)

    def prepare(self, session: Session) -> None:
        """At start-up: make sure the volume summary is kept for this rule's window, built
        from the log if it was kept for another width (or not yet, as in a log written
        before the summary existed)."""
        locked = self.lock(session)
        width = self.volume.width
        if repository.volume_widths(session) == [width]:
            return
        if locked.head is not None:
            log.warning("building the volume summary for a %d-second window from the log", width)
        self.store.rebuild_windows(session, width)
        repository.register_width(session, width, locked.head[0] if locked.head else 0)

    def sign_head(self, session: Session) -> dict[str, Any] | None:
        """Sign the current head on demand; None for an empty log."""
        current = self.lock(session).head
        if current is None:
            return None
        row = self._checkpoint_row(current[0], current[1])
        self.publish_key(session)
        repository.insert_checkpoints(session, [row])
        return row

    def _checkpoint_row(self, seq: int, digest: str) -> dict[str, Any]:
        key_id = self.signer.key_id
        signed_at = self.signing_clock()
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
                    "created_at": self.signing_clock(),
                },
            )


class LockedAppend:
    """The log under the append lock, in one transaction: what it already holds under the
    asked keys (`logged`), volume counts (`window_counts`), and `append`."""

    def __init__(self, ledger: Ledger, session: Session, opened: Opened) -> None:
        self._ledger = ledger
        self._session = session
        self._opened = opened
        self.head = opened.head
        self.logged: dict[IdempotencyKey, LoggedEvent] = opened.logged
        self._appended = False

    def window_counts(self, touches: Sequence[Touch]) -> list[int]:
        """For each touch, in order: the distinct records its actor touched in the trailing
        window (t - window, t] of its instant t, itself and the touches before it in the
        list included (by instant, then position), counted up to the rule's limit.

        The logged part comes from the summary read with the lock: per actor, the bucket
        of t and the one before, each at most `limit` rows. Only the instants given to
        `lock` (as `counted`) can be counted, and only before anything is appended.
        """
        if self._appended:
            raise RuntimeError("window counts are read before the append, not after it")
        rule = self._ledger.volume
        width_us, limit = rule.width * 1_000_000, rule.limit
        logged_at: dict[tuple[str, int], frozenset[tuple[str, str]] | None] = {}
        by_actor: dict[str, list[tuple[int, int, tuple[str, str]]]] = {}
        for i, (actor, record_type, record_id, at) in enumerate(touches):
            by_actor.setdefault(actor, []).append((microseconds(at), i, (record_type, record_id)))
        counts = [0] * len(touches)
        for actor, items in by_actor.items():
            items.sort()
            live: dict[tuple[str, str], int] = {}
            left = 0
            for at_us, i, record in items:
                horizon = at_us - width_us
                while items[left][0] <= horizon:
                    gone = items[left][2]
                    live[gone] -= 1
                    if not live[gone]:
                        del live[gone]
                    left += 1
                records = {*live, record}
                count = limit
                if len(records) < limit:
                    key = (actor, at_us)
                    if key not in logged_at:
                        logged_at[key] = self._logged_records(actor, at_us, width_us, limit)
                    logged = logged_at[key]
                    if logged is not None:
                        count = min(len(records | logged), limit)
                counts[i] = count
                live[record] = live.get(record, 0) + 1
        return counts

    def _logged_records(
        self, actor: str, at_us: int, width_us: int, limit: int
    ) -> frozenset[tuple[str, str]] | None:
        """The records `actor`'s logged accesses touched in (at - width, at]; None when
        there are at least `limit` of them."""
        bucket = at_us // width_us
        since = at_us - width_us
        records: set[tuple[str, str]] = set()
        # The bucket of `at`: rows touched first at or before it, the earliest first.
        rows = self._opened.earliest[(actor, bucket)]
        for record_type, record_id, first_us, _ in rows:
            if first_us > at_us:
                break
            records.add((record_type, record_id))
        else:
            if len(rows) >= limit:
                return None
        # The bucket before: rows touched last after `since`, the latest first.
        rows = self._opened.latest[(actor, bucket - 1)]
        for record_type, record_id, _, last_us in rows:
            if last_us <= since:
                break
            records.add((record_type, record_id))
        else:
            if len(rows) >= limit:
                return None
        return frozenset(records) if len(records) < limit else None

    def append(self, now: datetime, events: Sequence[NewEvent]) -> list[Appended]:
        """Chain and insert `events` in order, recorded at `now`, with the volume summary.

        A checkpoint is signed at every seq that is a multiple of the interval, inside the
        same transaction, so a committed log never lacks a checkpoint it should have (the
        verifier treats a run of more than 1000 events without one as tampering). Signing
        in-line costs one Ed25519 signature (~50 µs) per 1000 events; signing "just after"
        would need a second writer and leave a window in which a crash loses a checkpoint.
        """
        if not events:
            return []
        ledger = self._ledger
        storage_row = ledger.store.storage_row
        width = ledger.volume.width
        width_us = width * 1_000_000
        seq, prev = self.head if self.head else (0, GENESIS_HASH)
        recorded_at = format_timestamp(now)
        rows: list[tuple[Any, ...]] = []
        touched: dict[tuple[str, int, str, str], list[int]] = {}
        checkpoints: list[dict[str, Any]] = []
        appended: list[Appended] = []
        leaves: list[bytes] = []
        size = seq
        event_ids = random_uuids(len(events))
        for event, event_id in zip(events, event_ids, strict=True):
            seq += 1
            occurred = event.occurred_at or now
            values = {name: getattr(event, name) for name in CONTENT_FIELDS}
            for name in NULLABLE_TEXT:
                if values[name] == "":
                    values[name] = None
            values.update(
                seq=seq,
                event_id=event_id,
                recorded_at=recorded_at,
                occurred_at=format_timestamp(occurred),
            )
            canonical = encode_canonical({n: values[n] for n in HASHED_FIELDS})
            digest = chain_hash(prev, canonical)
            leaves.append(leaf_hash(canonical))
            values.update(prev_hash=prev, hash=digest)
            rows.append(storage_row([values[name] for name in EVENT_FIELDS]))
            appended.append(Appended(seq, event_id, digest))
            if event.kind in _ACCESS and event.actor and event.record_type and event.record_id:
                at_us = microseconds(occurred)
                key = (event.actor, at_us // width_us, event.record_type, event.record_id)
                span = touched.get(key)
                if span is None:
                    touched[key] = [at_us, at_us]
                else:
                    span[0], span[1] = min(span[0], at_us), max(span[1], at_us)
            if seq % ledger.checkpoint_interval == 0:
                checkpoints.append(ledger._checkpoint_row(seq, digest))
            prev = digest
        upkeep: list[TouchUpkeep] = [
            (actor, width, bucket, record_type, record_id, first, last)
            for (actor, bucket, record_type, record_id), (first, last) in touched.items()
        ]
        session, store = self._session, ledger.store
        try:
            hashes = grow(size, leaves, partial(store.stored_hashes, session))
        except ProofError as exc:
            log.error("the Merkle tree does not match the log at seq %d: %s", size + 1, exc)
            raise LedgerUnavailable("the audit log's tree is damaged: run verify") from exc
        # The first rows are the leaves, in order: each carries its authenticator.
        mark = ledger.authenticator.mark
        tree: list[TreeRow] = [
            (level, position, value, mark(value) if i < len(leaves) else None)
            for i, (level, position, value) in enumerate(hashes)
        ]
        store.insert(session, rows, upkeep, tree)
        ledger.appended.pending(session, size + 1, leaves)
        if checkpoints:
            ledger.publish_key(self._session)
            repository.insert_checkpoints(self._session, checkpoints)
        self.head = (seq, prev)
        self._appended = True
        return appended


def random_uuids(n: int) -> list[str]:
    """`n` random (version 4) UUIDs as text, their bytes drawn from the kernel in one call:
    `uuid.uuid4()` asks once per UUID, and building `uuid.UUID` objects costs as much again
    (together a twentieth of an event's append in bench/ingest.py)."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes(0x40 | (b & 0x0F) for b in raw[6::16])  # version 4
    raw[8::16] = bytes(0x80 | (b & 0x3F) for b in raw[8::16])  # the RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
        for i in range(0, 32 * n, 32)
    ]  # fmt: skip


def start(session: Session, ledger: Ledger) -> None:
    """At start-up, in one transaction: keep the volume summary for the policy's window
    (`Ledger.prepare`) and publish the current key before it signs anything. Workers
    starting together take turns on the ledger lock."""
    ledger.prepare(session)
    ledger.publish_key(session)


def verify(
    session: Session,
    ledger: Ledger,
    log_keys: Sequence[Verifier],
    from_seq: int | None,
    to_seq: int | None,
    *,
    pinned: bool = False,
) -> Verification:
    """Verify the chain, its checkpoints and the tree (with the service's authenticator).
    Tree checkpoints must open with one of `log_keys`; chain checkpoints are checked with
    the published keys and the service's own as it is, or with `pinned`, only with the
    keys of `log_keys` (AUDIT_TRUSTED_LOG_KEYS: whatever the database publishes)."""
    if from_seq is not None and to_seq is not None and from_seq > to_seq:
        raise Invalid(["query", "from_seq"], "from_seq must not be greater than to_seq")
    own_key = {ledger.signer.key_id: ledger.signer.public_key_pem}
    retired = frozenset(
        bytes.fromhex(key.key_id)[:4]
        for key in repository.signing_keys(session)
        if key.key_id != ledger.signer.key_id
    )
    tree = TreeChecks(
        log_keys, ledger.authenticator, repository.authenticated_from(session), retired
    )
    return verify_chain(
        session,
        from_seq=from_seq,
        to_seq=to_seq,
        trusted_keys=None if pinned else own_key,
        pinned_keys=[key.public_key for key in log_keys] if pinned else None,
        tree=tree,
    )


def sign_checkpoint(session: Session, ledger: Ledger) -> dict[str, Any]:
    """Sign the current head now; 409 for an empty log."""
    checkpoint = ledger.sign_head(session)
    if checkpoint is None:
        raise Conflict("the log is empty: there is no head to sign")
    return checkpoint


def list_checkpoints(
    session: Session, cursors: Cursors, *, newest_first: bool, cursor: str | None, limit: int
) -> tuple[list[Checkpoint], str | None]:
    """A page of checkpoints in signing order and the cursor of the next page."""
    query = {"order": "newest" if newest_first else "oldest", "limit": limit}
    after = int_key(cursors.decode("checkpoints", query, cursor))
    rows = repository.checkpoints_page(
        session, newest_first=newest_first, after_id=after, limit=limit + 1
    )
    return cursors.page(rows, limit, "checkpoints", query, lambda row: row.id)


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
