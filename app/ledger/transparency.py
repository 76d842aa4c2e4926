"""The verifiable log (docs/integrity.md, "The tree"): the Merkle tree's signed checkpoints,
its tiles and entry bundles, and inclusion and consistency proofs, all read from the hashes
the append stores (`models.TreeHash`).

A checkpoint is a C2SP signed note `<origin>\\n<size>\\n<base64 root>\\n` signed with the
log's Ed25519 key (the chain checkpoints' key) under the log's origin. `publish` signs the
tree of every committed event when it has grown since the last checkpoint; the service
calls it every AUDIT_CHECKPOINT_SECONDS (`Publisher`). Checkpoints are only ever added,
and each extends the one before (the tree only grows): `consistency` proves it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from cachetools import LRUCache
from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.clock import Clock, rounds
from app.db import Base, Database
from app.errors import Invalid, LedgerUnavailable, NotFound
from app.ledger import repository
from app.ledger.appended import AppendedLeaves
from app.ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    HashAt,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    multi_proof,
    range_hash,
    tile_hash_at,
    tile_width,
)
from app.ledger.models import LogSetting, TreeCheckpoint, TreeCosignature, TreeHash
from app.ledger.note import Checkpoint, NoteSigner, Verifier
from app.ledger.signing import Authenticator, Signer

log = logging.getLogger("access_audit")

ORIGIN_SETTING: Final = "origin"
GENERATED_ORIGIN: Final = "access-audit.invalid/{}"
PROOF_HEADER: Final = "c2sp.org/tlog-proof@v1"
# One worker at a time makes a checkpoint (a transaction-scoped lock; PostgreSQL).
PUBLISH_LOCK_KEY: Final = 0x747265652D636B  # "tree-ck"


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


class TransparencyLog:
    """The log's identity (origin and note key) and what it publishes about its tree.

    `origin` is AUDIT_LOG_ORIGIN when set; otherwise one generated once per database and
    kept in `log_settings` (`origin_for`)."""

    def __init__(
        self,
        signer: Signer,
        configured_origin: str | None,
        signing_clock: Clock,
        trusted: Sequence[Verifier] = (),
        *,
        appended: AppendedLeaves,
    ) -> None:
        self._key = signer.private_key
        # What this process appended (the append's `Ledger.appended`): checked cheaply.
        self._appended = appended
        self._trusted = list(trusted)
        self.authenticator = Authenticator.of(signer.private_key)
        self._refused: int | None = None  # the seq last refused a checkpoint (logged once)
        self._origin: str | None = configured_origin
        self.signing_clock = signing_clock
        self.tiles = TileCache()  # for read sessions only (`TileCache`)

    def origin_for(self, session: Session) -> str:
        """The log's origin, generated and stored on first use when none is configured."""
        if self._origin is None:
            stored = session.get(LogSetting, ORIGIN_SETTING)
            if stored is None:
                generated = GENERATED_ORIGIN.format(uuid.uuid4())
                # Workers starting together: the first one's origin stays.
                insert_new(session, LogSetting, {"name": ORIGIN_SETTING, "value": generated})
                stored = session.get(LogSetting, ORIGIN_SETTING, populate_existing=True)
            assert stored is not None
            self._origin = stored.value
        return self._origin

    def note_signer(self, session: Session) -> NoteSigner:
        return NoteSigner(self.origin_for(session), self._key)

    @property
    def pinned(self) -> bool:
        """Whether AUDIT_TRUSTED_LOG_KEYS names the trusted keys."""
        return bool(self._trusted)

    def trusted_keys(self, session: Session) -> list[Verifier]:
        """The log keys `verify` trusts: AUDIT_TRUSTED_LOG_KEYS, else the service's own."""
        return self._trusted or [self.note_signer(session).verifier]

    def vkey(self, session: Session) -> str:
        """The signed-note verifier key: `<origin>+<hex key id>+base64(0x01 || key)`."""
        return self.note_signer(session).verifier.vkey

    # --- checkpoints ---------------------------------------------------------------------

    def next_checkpoint(self, session: Session) -> TreeCheckpoint | None:
        """A checkpoint of every committed event, signed now, if the tree grew since the
        latest one (the empty tree's for a new log); None when there is nothing new."""
        latest = self.forget_checkpointed(session)
        head = repository.head(session)
        size = head[0] if head else 0
        if latest is not None and size <= latest:
            return None
        # Never sign over an event the service did not write: stop before the first one.
        found = first_unauthentic(
            session, self.authenticator, (latest or 0) + 1, size, self._appended
        )
        if found is not None:
            seq, problem = found
            if self._refused != seq:
                log.error("no checkpoint covers seq %d: the event %s", seq, problem)
                self._refused = seq
            size = seq - 1
            if latest is not None and size <= latest:
                return None
        signer = self.note_signer(session)
        root = tree_root(session, size)
        text = Checkpoint(signer.name, size, root).text
        return TreeCheckpoint(
            size=size,
            root=root,
            note=text + "\n" + signer.signature_line(text),
            signed_at=self.signing_clock(),
        )

    def forget_checkpointed(self, session: Session) -> int | None:
        """The latest checkpoint's size (None before the first); the leaves this process
        remembers for the checks before signing are dropped up to it."""
        latest: int | None = session.scalar(_LATEST_SIZE)
        self._appended.forget_through(latest or 0)
        return latest

    def publish(self, session: Session) -> TreeCheckpoint | None:
        """`next_checkpoint`, stored (in one session: the CLI, start-up, tests)."""
        row = self.next_checkpoint(session)
        if row is not None:
            store_checkpoint(session, row)
        return row


def store_checkpoint(session: Session, row: TreeCheckpoint) -> None:
    """Store a signed checkpoint unless one of its size is stored already (a size has one
    root: whoever signed it first, their note stays)."""
    values = {"size": row.size, "root": row.root, "note": row.note, "signed_at": row.signed_at}
    insert_new(session, TreeCheckpoint, values)


def insert_new(session: Session, model: type[Base], values: dict[str, object]) -> None:
    """Insert a row unless its primary key is taken (then the row there stays)."""
    dialect = session.get_bind().dialect.name
    upsert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(upsert(model).values(**values).on_conflict_do_nothing())


# What every proof request reads, as Core statements built once.
_cosignatures = TreeCosignature.__table__
_checkpoints = TreeCheckpoint.__table__
_hashes = TreeHash.__table__
# A checkpoint's note with its cosignature lines, in one read: one row without
# cosignatures (line null), else one per witness, by witness.
_COSIGNED_NOTE: Final = (
    select(_checkpoints.c.note, _cosignatures.c.line)
    .select_from(_checkpoints.outerjoin(_cosignatures, _cosignatures.c.size == _checkpoints.c.size))
    .where(_checkpoints.c.size == bindparam("size"))
    .order_by(_cosignatures.c.witness)
)
_LATEST_SIZE: Final = select(func.max(_checkpoints.c.size))


def cosigned_note(session: Session, size: int) -> str | None:
    """The note of the checkpoint of `size` with every cosignature kept for it (C2SP: one
    note, the log's signature first); None without such a checkpoint."""
    rows = session.execute(_COSIGNED_NOTE, {"size": size}).all()
    if not rows:
        return None
    return str(rows[0][0]) + "".join(line for _, line in rows if line is not None)


def with_cosignatures(session: Session, checkpoint: TreeCheckpoint) -> str:
    """`checkpoint`'s note with every cosignature kept for it."""
    return cosigned_note(session, checkpoint.size) or checkpoint.note


def latest_cosigned_size(session: Session, at_least: int) -> int | None:
    """The largest checkpointed size of at least `at_least` that a witness cosigned."""
    return session.scalar(
        select(func.max(TreeCosignature.size)).where(TreeCosignature.size >= at_least)
    )


def first_unauthentic(
    session: Session,
    authenticator: Authenticator,
    first: int,
    last: int,
    appended: AppendedLeaves,
) -> tuple[int, str] | None:
    """(seq, what is wrong) of the first event in first … last that the service did not
    write as it stands: its leaf in the tree is not its canonical bytes' hash, or the leaf
    lacks this key's authenticator (events before `authenticated_from` are not asked).

    For the events this process appended (`appended`), the leaf it computed stands in
    for the hash of the row read back (see `app.ledger.appended`); a stored leaf that
    differs sends the event to the full check."""
    first = max(first, repository.authenticated_from(session))
    at = first
    while at <= last:
        end, remembered = appended.run(at, last)
        leaves = None if remembered is None else _leaves_if(session, at, end, remembered)
        if leaves is not None:
            found = _first_unmarked(authenticator, leaves)
        else:
            found = _first_unwritten(session, authenticator, at, end)
        if found is not None:
            return found
        at = end + 1
    return None


def _leaves_if(
    session: Session, first: int, last: int, remembered: list[bytes]
) -> list[tuple[int, bytes, bytes | None]] | None:
    """(seq, leaf, authenticator) of seqs first … last as the tree holds them, if their
    leaves are exactly the `remembered` ones; else None."""
    rows = session.execute(_LEAVES, {"level": 0, "start": first - 1, "end": last})
    leaves = [
        (position + 1, bytes(value), None if mark is None else bytes(mark))
        for position, value, mark in rows
    ]
    return leaves if [leaf for _, leaf, _ in leaves] == remembered else None


def _first_unmarked(
    authenticator: Authenticator, leaves: Sequence[tuple[int, bytes, bytes | None]]
) -> tuple[int, str] | None:
    """(seq, what is wrong) of the first of `leaves` without this key's authenticator."""
    for seq, leaf, mark in leaves:
        problem = authenticator.check(leaf, mark)
        if problem is not None:
            return seq, problem
    return None


def _first_unwritten(
    session: Session, authenticator: Authenticator, first: int, last: int
) -> tuple[int, str] | None:
    """The full check of seqs first … last, each from its row read back."""
    for seq, canonical, stored, mark in repository.stored_leaves(session, first, last):
        leaf = leaf_hash(canonical)
        if stored != leaf:
            return seq, "is not the tree's leaf (written behind the service's back?)"
        problem = authenticator.check(leaf, mark)
        if problem is not None:
            return seq, problem
    return None


def latest_checkpoint(session: Session) -> TreeCheckpoint | None:
    return session.scalar(select(TreeCheckpoint).order_by(TreeCheckpoint.size.desc()).limit(1))


def covering_checkpoint(session: Session, seq: int) -> TreeCheckpoint | None:
    """The earliest checkpoint whose tree holds event `seq`."""
    return session.scalar(
        select(TreeCheckpoint).where(TreeCheckpoint.size >= seq).order_by(TreeCheckpoint.size)
    )


@dataclass(frozen=True, slots=True)
class RowsProof:
    """What proves many events at once against one checkpoint (`merkle.multi_proof`)."""

    tree_size: int
    checkpoint: str
    leaves: int
    nodes: list[dict[str, object]]


def rows_proof(session: Session, seqs: Sequence[int], checkpoint: TreeCheckpoint) -> RowsProof:
    """The events `seqs` (sorted) proven against `checkpoint`: each node once."""
    hash_at = hash_reader(session, checkpoint.size)
    nodes = multi_proof(hash_at, [seq - 1 for seq in seqs], checkpoint.size)
    return RowsProof(
        tree_size=checkpoint.size,
        checkpoint=with_cosignatures(session, checkpoint),
        leaves=len(seqs),
        nodes=[{"start": start, "end": end, "hash": b64(value)} for start, end, value in nodes],
    )


def checkpoint_of_size(session: Session, size: int) -> TreeCheckpoint | None:
    return session.get(TreeCheckpoint, size)


def _latest_size(session: Session) -> int:
    latest: int | None = session.scalar(_LATEST_SIZE)
    if latest is None:
        raise NotFound("no checkpoint of the tree has been published yet")
    return latest


# --- the stored tree -------------------------------------------------------------------


def _positions(*columns: ColumnElement[Any]) -> Select[Any]:
    """`columns` of the positions start … end - 1 of a level, in order (bound parameters
    `level`, `start`, `end`)."""
    return (
        select(*columns)
        .where(
            _hashes.c.tile_level == bindparam("level"),
            _hashes.c.position >= bindparam("start"),
            _hashes.c.position < bindparam("end"),
        )
        .order_by(_hashes.c.position)
    )


# Statements built once: a tile is a range of one level's positions. On the table's
# columns, not the mapped class's: rows come back as plain rows, without the ORM's
# loading (a leaf tile read took 0.24 ms that way, 0.14 ms this way).
_TILE_QUERY: Final = _positions(_hashes.c.position, _hashes.c.hash)
# A tile's leaves with their authenticators (the checks before signing).
_LEAVES: Final = _positions(_hashes.c.position, _hashes.c.hash, _hashes.c.authenticator)
# 16 MiB of tiles: every tile above level 0 of a log of 500 million events, or 2,048 of
# its leaf tiles (8 KiB each).
TILE_CACHE_BYTES: Final = 16 << 20
# About 7 MiB of complete-subtree hashes (~220 bytes an entry with its key).
SUBTREE_CACHE_ENTRIES: Final = 32_768


def stored_tile(session: Session, level: int, index: int) -> bytes:
    """The stored hashes of tile `level/index` (as many as the tree has, up to 256)."""
    start = index * TILE_WIDTH
    rows = session.execute(
        _TILE_QUERY, {"level": level, "start": start, "end": start + TILE_WIDTH}
    ).all()
    hashes = []
    for expected, (position, value) in enumerate(rows, start):
        if position != expected or len(value) != HASH_SIZE:
            break  # a gap or a damaged hash: the tile ends before it
        hashes.append(bytes(value))
    return b"".join(hashes)


class TileCache:
    """Tiles as read from `tree_hashes`, kept for a process's later reads (LRU, bounded
    in bytes).

    A stored hash never changes: the table is append-only (the database refuses UPDATE
    and DELETE) and the append writes each position once. So a tile read once serves
    every later proof and tile request: a full one for good, a partial one for every tree
    it is long enough for (a longer read replaces it). Proofs touch the same few tiles
    near the tree's right edge and above level 0 again and again; without the cache each
    proof read five tiles (1,280 rows at 1,000,000 events).

    Only committed hashes may go in: it is filled by read sessions (the /v1/log routes),
    never by a transaction that appends (whose tree rows could still roll back).
    """

    def __init__(
        self, max_bytes: int = TILE_CACHE_BYTES, max_subtrees: int = SUBTREE_CACHE_ENTRIES
    ) -> None:
        self._tiles: LRUCache[tuple[int, int], bytes] = LRUCache(maxsize=max_bytes, getsizeof=len)
        # Complete subtrees between two tile levels, each rebuilt from up to 128 hashes of
        # the tile below (127 SHA-256 calls): as immutable as the hashes they fold.
        self._subtrees: LRUCache[tuple[int, int], bytes] = LRUCache(maxsize=max_subtrees)
        self._lock = threading.Lock()

    def get(self, level: int, index: int, width: int) -> bytes | None:
        """Tile `level/index` if a read of at least `width` hashes is kept."""
        with self._lock:
            data = self._tiles.get((level, index))
        return data if data is not None and len(data) >= width * HASH_SIZE else None

    def put(self, level: int, index: int, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            kept = self._tiles.get((level, index))
            if kept is None or len(data) > len(kept):
                self._tiles[(level, index)] = data

    def read(self, session: Session, level: int, index: int, width: int) -> bytes:
        """At least the first `width` hashes of tile `level/index` when the tree has them
        (fewer when it does not), from the cache or else from `session`."""
        data = self.get(level, index, width)
        if data is None:
            data = stored_tile(session, level, index)
            self.put(level, index, data)
        return data

    def subtree(self, level: int, index: int, fold: HashAt) -> bytes:
        """The complete subtree `level/index`, kept, or `fold`ed now and kept."""
        key = (level, index)
        with self._lock:
            value = self._subtrees.get(key)
        if value is None:
            value = fold(level, index)
            with self._lock:
                self._subtrees[key] = value
        return value


def read_tile(
    session: Session, level: int, index: int, width: int, cache: TileCache | None
) -> bytes:
    """Tile `level/index` as stored (at least `width` hashes when the tree has them),
    through `cache` when given."""
    if cache is None:
        return stored_tile(session, level, index)
    return cache.read(session, level, index, width)


def hash_reader(session: Session, size: int, cache: TileCache | None = None) -> HashAt:
    """A `HashAt` over the stored tiles of the tree of `size`, each tile read at most once
    (and through `cache` when given: only for read sessions, see `TileCache`)."""
    tiles: dict[tuple[int, int], bytes] = {}

    def tile(level: int, index: int) -> bytes:
        key = (level, index)
        data = tiles.get(key)
        if data is None:
            width = tile_width(size, level, index)
            data = read_tile(session, level, index, width, cache)[: width * HASH_SIZE]
            tiles[key] = data
        return data

    folded = tile_hash_at(tile)
    if cache is None:
        return folded

    def hash_at(level: int, index: int) -> bytes:
        if level % TILE_HEIGHT == 0:  # a tile's own hash: nothing to fold
            return folded(level, index)
        return cache.subtree(level, index, folded)

    return hash_at


def tree_root(session: Session, size: int) -> bytes:
    """MTH of the first `size` events, from the stored tree."""
    return range_hash(hash_reader(session, size), 0, size) if size else EMPTY_ROOT


def tile(
    session: Session, level: int, index: int, width: int | None, cache: TileCache | None = None
) -> bytes:
    """Hash tile `level/index` (full, or its first `width` hashes); 404 if the tree does
    not have it yet."""
    wanted = TILE_WIDTH if width is None else width
    data = read_tile(session, level, index, wanted, cache)
    if len(data) < wanted * HASH_SIZE:
        raise NotFound("the tree does not have this tile yet")
    return data[: wanted * HASH_SIZE]


def entry_bundle(session: Session, index: int, width: int | None) -> bytes:
    """Entry bundle `index` (full, or its first `width` entries): each event's canonical
    bytes behind a big-endian uint16 length, in seq order; 404 if the log is shorter."""
    wanted = TILE_WIDTH if width is None else width
    first = index * TILE_WIDTH + 1
    parts: list[bytes] = []
    for seq, canonical in repository.canonical_forms(session, first, first + wanted - 1):
        if seq != first + len(parts):
            break
        parts.append(len(canonical).to_bytes(2, "big") + canonical)
    if len(parts) < wanted:
        raise NotFound("the log does not have this entry bundle yet")
    return b"".join(parts)


# --- proofs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    hashes: list[str]


def consistency(
    session: Session, old: int, new: int, cache: TileCache | None = None
) -> ConsistencyProof:
    """The proof that the tree of size `old` is a prefix of the tree of size `new`; `new`
    must not exceed the latest checkpoint's size (422 naming the parameter)."""
    latest = _latest_size(session)
    if new > latest:
        message = f"new must not exceed the latest checkpoint's size {latest}"
        raise Invalid(["query", "new"], message)
    if old > new:
        raise Invalid(["query", "old"], "old must not be greater than new")
    hashes = consistency_proof(hash_reader(session, new, cache), old, new)
    return ConsistencyProof(old, new, [b64(h) for h in hashes])


@dataclass(frozen=True, slots=True)
class InclusionProof:
    seq: int
    index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]
    checkpoint: str


def inclusion(
    session: Session, seq: int, size: int | None, cache: TileCache | None = None
) -> InclusionProof:
    """The proof that event `seq` is leaf seq - 1 of the checkpointed tree of `size`
    (default: the latest checkpoint's); 422 if seq > size, 404 without such a checkpoint.
    The leaf hash is the tree's: a checkpoint is only signed over leaves that are their
    events' canonical bytes' hashes (`first_unauthentic`), and whoever holds the event
    checks it against its own encoding anyway."""
    if size is None:
        size = _latest_size(session)
    if seq > size:
        raise Invalid(["query", "seq"], f"seq {seq} is not in the tree of size {size}")
    note = cosigned_note(session, size)
    if note is None:
        raise NotFound(f"no checkpoint of size {size} was published")
    hash_at = hash_reader(session, size, cache)
    hashes = inclusion_proof(hash_at, seq - 1, size)
    return InclusionProof(
        seq=seq,
        index=seq - 1,
        tree_size=size,
        leaf_hash=b64(hash_at(0, seq - 1)),
        hashes=[b64(h) for h in hashes],
        checkpoint=note,
    )


def proof_bundle(session: Session, seq: int, cache: TileCache | None = None) -> str:
    """Event `seq` as a C2SP tlog-proof, provable offline: against the latest checkpoint a
    witness cosigned that covers it, else the latest checkpoint."""
    size = latest_cosigned_size(session, seq)
    if size is None:
        latest = latest_checkpoint(session)
        if latest is None or latest.size < seq:
            raise NotFound(f"event {seq} is not in a signed tree (yet)")
    proof = inclusion(session, seq, size, cache)
    lines = [PROOF_HEADER, f"index {proof.index}", *proof.hashes]
    return "\n".join(lines) + "\n\n" + proof.checkpoint


# --- publishing in the background ------------------------------------------------------


class Publisher:
    """Signs a checkpoint every `interval` seconds when the tree has grown: a daemon thread
    per process. The checkpoint is made in a read session and stored in a short write
    transaction, so the writers of the log wait for it no longer than for an insert; two
    workers that sign the same size store it once."""

    def __init__(
        self,
        database: Database,
        log_: TransparencyLog,
        interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._log = log_
        self._interval = interval
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run in the background; with the served app's `loop`, checkpoints are stored in
        the process's turn to write (`Database.write_from_thread`)."""
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def publish_once(self) -> TreeCheckpoint | None:
        with self._database.reader() as session:
            if session.get_bind().dialect.name == "postgresql":
                turn = func.pg_try_advisory_xact_lock(PUBLISH_LOCK_KEY)
                if not session.scalar(select(turn)):
                    # Another worker is signing this round; what it signed needs no check.
                    self._log.forget_checkpointed(session)
                    return None
            row = self._log.next_checkpoint(session)
        if row is not None:
            self._database.write_from_thread(partial(store_checkpoint, row=row), self._loop)
        return row

    def _run(self) -> None:
        # A round reads and checks the new leaves and may wait for the turn to write
        # behind a batch: its length comes out of the wait for the next (`rounds`).
        for _ in rounds(self._stop, self._interval, self._monotonic):
            try:
                self.publish_once()
            except (SQLAlchemyError, LedgerUnavailable) as exc:  # away or busy: next time
                log.warning("could not publish a tree checkpoint: %s", exc)
