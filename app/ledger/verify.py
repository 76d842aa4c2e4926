"""Verification: recompute the chain from the stored rows and check every signed checkpoint.

The rows are streamed in seq order (constant memory). For each event: its seq follows the
previous one, its hash recomputes from its stored `prev_hash` and canonical form, its
`prev_hash` is the previous event's hash, and any checkpoint at its seq carries its hash.
Every checkpoint in range must have a valid Ed25519 signature by a published key, and no
checkpoint may lie beyond the last event (a truncated tail).

With `tree` (`TreeChecks`), the Merkle tree too: each event's leaf in the tree is the hash
of its canonical bytes and carries the service's authenticator (when the checks hold its
key), every tree checkpoint is signed by a trusted log key, and, from seq 1, the root
recomputed from the events at each checkpointed size is the signed one; no tree
checkpoint may be larger than the log. The first problem, by seq, is reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.orm import Session

from app.ledger import repository
from app.ledger.canonical import CANONICAL_ORDER, GENESIS_HASH, chain_hash, encode_canonical
from app.ledger.merkle import leaf_hash, node_hash
from app.ledger.note import Checkpoint, NoteError, Verifier, open_note
from app.ledger.signing import (
    Authenticator,
    checkpoint_message,
    key_id_of,
    load_public_key,
    signature_valid,
)

BATCH_SIZE = 5000
# The contract signs a checkpoint at least every 1000 events (settings cap the interval
# there), so a longer run without one means checkpoints were removed.
MAX_CHECKPOINT_GAP = 1000


# The C scanner behind json.loads, called directly: json.loads adds two regex matches and
# three Python calls around it, which is most of the cost of reading a short JSON list.
_scan_json = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # a duck-typed context


def _read_json(text: str) -> Any:
    """The value of a stored JSON text (ValueError when it is not JSON)."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        end = -1
    if end == len(text):
        return value
    return json.loads(text)  # surrounding whitespace, or not JSON at all (raises)


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome: `problem` names the first break in one line, or is None when valid."""

    valid: bool
    checked: int
    head_seq: int | None
    head_hash: str | None
    first_invalid_seq: int | None
    problem: str | None
    checkpoints_checked: int


@dataclass(frozen=True)
class TreeChecks:
    """What to check of the Merkle tree: tree checkpoints must open with one of `log_keys`
    (signed-note verifiers), and with `authenticator` every leaf from
    `authenticated_from` on must carry its mark (only the service holds its key)."""

    log_keys: Sequence[Verifier]
    authenticator: Authenticator | None = None
    authenticated_from: int = 1
    # Tags of earlier signing keys (published in `signing_keys`): their events' marks
    # cannot be checked without the retired key, and are taken as they are. New events
    # are always checked against the current key (the publisher signs over no other).
    retired_tags: frozenset[bytes] = frozenset()


def tree_checks(
    session: Session,
    log_keys: Sequence[Verifier],
    origin: str | None,
    private_key: Ed25519PrivateKey | None,
) -> TreeChecks:
    """The tree checks of an outside verifier (the CLI): tree checkpoints must open with
    `log_keys`, or when none are given, with a key the database publishes under the log's
    origin; authenticators are checked only with the signing key at hand."""
    published = repository.signing_keys(session)
    if not log_keys:
        name = origin or repository.log_origin(session)
        loaded = (load_public_key(key.public_key_pem) for key in published)
        log_keys = [Verifier.of(name, key) for key in loaded if key is not None and name]
    authenticator = Authenticator.of(private_key) if private_key is not None else None
    retired = frozenset(
        bytes.fromhex(key.key_id)[:4]
        for key in published
        if authenticator is None or bytes.fromhex(key.key_id)[:4] != authenticator.tag
    )
    return TreeChecks(log_keys, authenticator, repository.authenticated_from(session), retired)


@dataclass(frozen=True, slots=True)
class _Problem:
    seq: int
    text: str


def verify_chain(
    session: Session,
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
    trusted_keys: Mapping[str, str] | None = None,
    pinned_keys: Sequence[Ed25519PublicKey] | None = None,
    tree: TreeChecks | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> Verification:
    """Verify events `from_seq`..`to_seq` (default: the whole log) and their checkpoints.

    `trusted_keys` (key_id → public PEM) take precedence over the published keys of the
    same id, e.g. the running service's own key. `pinned_keys`, when given, are the only
    keys a checkpoint may be signed by: the keys published in the database are not
    consulted (an auditor who holds the service's public key need not trust the database
    for it). `progress` is called with the number of events checked so far after each batch.
    """
    first = from_seq or 1
    # Checkpoints and keys are read before the events: under READ COMMITTED a later read
    # sees at least the events every checkpoint read here refers to.
    checkpoints = repository.checkpoints_between(session, first, to_seq)
    keys: dict[str, Ed25519PublicKey | None] = (
        {key_id_of(key): key for key in pinned_keys}
        if pinned_keys is not None
        else _published_keys(session, trusted_keys or {})
    )
    problems = _signature_problems(checkpoints, keys)
    expected: dict[int, list[str]] = {}
    for checkpoint in checkpoints:
        expected.setdefault(checkpoint.seq, []).append(checkpoint.hash)

    roots: dict[int, bytes] = {}
    if tree is not None:
        tree_problem, roots = _tree_checkpoints(session, first, to_seq, tree.log_keys)
        if tree_problem is not None:
            problems.append(tree_problem)
    stop_after = min((p.seq for p in problems), default=None)
    scan = _check_rows(
        session, first, to_seq, expected, stop_after, progress, batch_size, tree, roots
    )
    head = repository.head(session)
    if scan.problem is not None:
        problems.append(scan.problem)
    elif not scan.stopped:
        head_seq = head[0] if head else 0
        problems.extend(_tail_problems(session, first, to_seq, scan, head_seq, expected))
        end = scan.last_seq if scan.last_seq is not None else first - 1
        beyond = [size for size in roots if size > end and (to_seq is None or size <= to_seq)]
        if beyond and (to_seq is None or end < to_seq):
            text = f"head seq {end} is behind the tree checkpoint of size {max(beyond)}"
            problems.append(_Problem(end + 1, text))
    if scan.last_seq is not None:
        before = repository.last_checkpoint_before(session, first) or 0
        problems.extend(_missing_checkpoints(first, scan.last_seq, before, sorted(expected)))
    problem = min(problems, key=lambda p: p.seq) if problems else None
    return Verification(
        valid=problem is None,
        checked=scan.checked,
        head_seq=head[0] if head else None,
        head_hash=head[1] if head else None,
        first_invalid_seq=problem.seq if problem else None,
        problem=problem.text if problem else None,
        checkpoints_checked=len(checkpoints),
    )


def _published_keys(
    session: Session, trusted: Mapping[str, str]
) -> dict[str, Ed25519PublicKey | None]:
    """key_id → public key; None for a published PEM that is not the key its id names."""
    pems = {row.key_id: row.public_key_pem for row in repository.signing_keys(session)}
    pems.update(trusted)
    keys: dict[str, Ed25519PublicKey | None] = {}
    for key_id, pem in pems.items():
        public = load_public_key(pem)
        keys[key_id] = public if public is not None and key_id_of(public) == key_id else None
    return keys


def _signature_problems(
    checkpoints: Iterable[Any], keys: Mapping[str, Ed25519PublicKey | None]
) -> list[_Problem]:
    """Every checkpoint must be signed by a published key, over its documented message."""
    for checkpoint in checkpoints:
        seq, key_id = checkpoint.seq, checkpoint.key_id
        if key_id not in keys:
            return [_Problem(seq, f"checkpoint at seq {seq} is signed by an unknown key {key_id}")]
        key = keys[key_id]
        if key is None:
            text = f"checkpoint at seq {seq} is signed by key {key_id}, published with another key"
            return [_Problem(seq, text)]
        message = checkpoint_message(seq, checkpoint.hash, checkpoint.signed_at, key_id)
        if not signature_valid(key, message, checkpoint.signature):
            return [_Problem(seq, f"checkpoint at seq {seq} has an invalid signature")]
    return []


@dataclass(frozen=True, slots=True)
class _Scan:
    checked: int
    last_seq: int | None  # the last seq read, None when no event was read
    problem: _Problem | None
    stopped: bool  # stopped before the end of the range (at a known problem's seq)


def _tree_checkpoints(
    session: Session, first: int, last: int | None, log_keys: Sequence[Verifier]
) -> tuple[_Problem | None, dict[int, bytes]]:
    """Every tree checkpoint must open with a trusted log key; their roots by size."""
    roots: dict[int, bytes] = {}
    for size, note in repository.tree_checkpoints(session):
        try:
            text, _ = open_note(note, log_keys)
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            problem = f"tree checkpoint of size {size} is not signed by a trusted log key: {exc}"
            return _Problem(max(size, 1), problem), roots
        if checkpoint.size != size:
            return _Problem(
                max(size, 1), f"tree checkpoint of size {size} says {checkpoint.size}"
            ), roots
        roots[size] = checkpoint.root
    return None, roots


class _Roots:
    """The tree's root at each size, grown leaf by leaf (the complete subtrees so far)."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []

    def add(self, leaf: bytes) -> None:
        stack, level, node = self.stack, 0, leaf
        while stack and stack[-1][0] == level:
            node = node_hash(stack.pop()[1], node)
            level += 1
        stack.append((level, node))

    def root(self) -> bytes:
        node = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            node = node_hash(left, node)
        return node


def _check_rows(
    session: Session,
    first: int,
    last: int | None,
    expected: Mapping[int, list[str]],
    stop_after: int | None,
    progress: Callable[[int], None] | None,
    batch_size: int,
    tree: TreeChecks | None = None,
    roots: Mapping[int, bytes] | None = None,
) -> _Scan:
    """Stream the rows and check each; ends at the first problem."""
    # Rows are the canonical fields in CANONICAL_ORDER, then prev_hash and hash (and with
    # `tree`, the tree's leaf hash and authenticator).
    fields = CANONICAL_ORDER
    prev_at = len(fields)
    growing = _Roots() if tree is not None and first == 1 else None
    authenticator = tree.authenticator if tree is not None else None
    retired = tree.retired_tags if tree is not None else frozenset()
    authenticated_from = tree.authenticated_from if tree is not None else 1
    sizes = roots or {}
    loads = _read_json
    next_seq = first
    # From the start of the log the first link is the genesis hash; from inside the log
    # the first event's own stored prev_hash is taken as given.
    prev: str | None = GENESIS_HASH if first == 1 else None
    checked = 0
    for batch in repository.chain_batches(session, first, last, batch_size, tree is not None):
        for row in batch:
            body = dict(zip(fields, row, strict=False))
            prev_hash = row[prev_at]
            stored = row[prev_at + 1]
            seq = body["seq"]
            if seq != next_seq or (stop_after is not None and seq > stop_after):
                read = next_seq - 1 if checked else None
                gap = _gap(first, next_seq, seq) if seq != next_seq else None
                return _Scan(checked, read, gap, stopped=True)
            try:
                body["actor_roles"] = loads(body["actor_roles"])
                body["reasons"] = loads(body["reasons"])
                body["flags"] = loads(body["flags"])
                body["details"] = loads(body["details"])
                canonical = encode_canonical(body)
                digest = chain_hash(prev_hash, canonical)
            except (ValueError, TypeError):  # unreadable stored values cannot match the hash
                digest = None
            if digest != stored:
                text = f"hash mismatch at seq {seq}"
                return _Scan(checked, seq, _Problem(seq, text), stopped=True)
            if tree is not None:
                problem = _leaf_problem(
                    seq, leaf_hash(canonical), row[prev_at + 2], row[prev_at + 3],
                    authenticator if seq >= authenticated_from else None, retired, growing,
                    sizes,
                )  # fmt: skip
                if problem is not None:
                    return _Scan(checked, seq, problem, stopped=True)
            if prev is not None and prev_hash != prev:
                text = f"broken link at seq {seq}: prev_hash does not match seq {seq - 1}"
                return _Scan(checked, seq, _Problem(seq, text), stopped=True)
            signed = expected.get(seq)
            if signed is not None and any(digest != h for h in signed):
                text = f"checkpoint at seq {seq} does not match the event's hash"
                return _Scan(checked, seq, _Problem(seq, text), stopped=True)
            prev = stored
            next_seq = seq + 1
            checked += 1
        if progress is not None:
            progress(checked)
    return _Scan(checked, next_seq - 1 if checked else None, None, stopped=False)


def _leaf_problem(
    seq: int,
    leaf: bytes,
    stored: bytes | None,
    mark: bytes | None,
    authenticator: Authenticator | None,
    retired: frozenset[bytes],
    growing: _Roots | None,
    roots: Mapping[int, bytes],
) -> _Problem | None:
    if stored is None or bytes(stored) != leaf:
        return _Problem(seq, f"event at seq {seq} is not the tree's leaf for it")
    if authenticator is not None:
        wrong = authenticator.check(leaf, None if mark is None else bytes(mark), retired)
        if wrong is not None:
            text = f"event at seq {seq} {wrong}: not written by the service"
            return _Problem(seq, text)
    if growing is not None:
        growing.add(leaf)
        signed = roots.get(seq)
        if signed is not None and signed != growing.root():
            return _Problem(seq, f"tree checkpoint of size {seq} does not match the events")
    return None


def _missing_checkpoints(first: int, end: int, before: int, signed: list[int]) -> list[_Problem]:
    """The first seq in first..end not covered by a checkpoint within the maximum gap."""
    previous = before
    for seq in [*(s for s in signed if s <= end), None]:
        # The first seq whose preceding MAX_CHECKPOINT_GAP seqs (itself included) must hold
        # the next checkpoint; a gap that ends before the range is reported at `first`.
        limit = max(previous + MAX_CHECKPOINT_GAP, first)
        if (seq is None or seq > limit) and limit <= end:
            text = f"missing checkpoint: none from seq {previous + 1} to seq {limit}"
            return [_Problem(limit, text)]
        if seq is not None:
            previous = seq
    return []


def _gap(first: int, expected_seq: int, seq: int) -> _Problem:
    if expected_seq == first:
        return _Problem(expected_seq, f"gap in seq: expected seq {expected_seq} first, found {seq}")
    return _Problem(expected_seq, f"gap in seq: {seq} follows {expected_seq - 1}")


def _tail_problems(
    session: Session,
    first: int,
    last: int | None,
    scan: _Scan,
    head_seq: int,
    expected: Mapping[int, list[str]],
) -> list[_Problem]:
    """After the last row of the range: missing events inside it, checkpoints past the end."""
    end = scan.last_seq if scan.last_seq is not None else first - 1
    if last is not None and end >= last:
        return []
    later = repository.next_seq_after(session, end)
    if later is not None and later > end + 1:
        return [_gap(first, end + 1, later)]
    beyond = [seq for seq in expected if seq > end]
    if beyond:
        # No event at or after `end + 1` exists: the log ends before its own checkpoint.
        ends_at = scan.last_seq if scan.last_seq is not None else min(head_seq, first - 1)
        text = f"head seq {ends_at} is behind the latest checkpoint at seq {max(beyond)}"
        return [_Problem(ends_at + 1, text)]
    return []
