"""What the chain alone missed, caught by the tree (contract section 13): a correctly
chained row inserted behind the service's back, a rewrite re-signed with a key added to
the database, a tail cut after the last chain checkpoint. Each is detected and named by
seq; no tree checkpoint is signed over a forged row."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from app.cli import main
from app.context import AppContext, build_context
from app.ledger import merkle, repository, transparency
from app.ledger.appended import AppendedLeaves
from app.ledger.canonical import canonical_bytes, chain_hash
from app.ledger.models import Event, SigningKey, TreeCheckpoint, TreeHash
from app.ledger.note import Checkpoint, NoteSigner
from app.ledger.signing import Signer, key_id_of
from tests.conftest import make_settings
from tests.test_integrity import append, attack, verify

EVENTS = Event.__table__


@pytest.fixture
def auditor(as_role: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return as_role("auditor")


def forge_next_event(session: Session, tree_row: bool, mark: bytes | None = None) -> int:
    """Insert a correctly chained event after the head, as someone with database access
    but not the service's key would (and its leaf in the tree, if `tree_row`)."""
    head = repository.head(session)
    assert head is not None
    seq, prev = head[0] + 1, head[1]
    row = session.execute(select(EVENTS).where(EVENTS.c.seq == head[0])).mappings().one()
    forged: dict[str, Any] = {**row, "seq": seq, "event_id": str(uuid.uuid4()),
                              "actor": "someone.else", "prev_hash": prev}  # fmt: skip
    canonical = canonical_bytes(forged)
    forged["hash"] = chain_hash(prev, canonical)
    session.execute(insert(EVENTS), [forged])
    if tree_row:
        session.execute(insert(TreeHash), [{
            "tile_level": 0, "position": seq - 1, "hash": merkle.leaf_hash(canonical),
            "authenticator": mark,
        }])  # fmt: skip
    session.flush()
    return seq


@pytest.mark.parametrize("tree_row", [False, True], ids=["no leaf", "leaf, no valid mark"])
def test_a_chained_row_inserted_behind_the_service_is_caught_and_never_checkpointed(
    client: TestClient,
    session: Session,
    context: AppContext,
    auditor: dict[str, str],
    tree_row: bool,
) -> None:
    append(session, context, 5)
    context.transparency.publish(session)
    forged = forge_next_event(session, tree_row, mark=b"\x00" * 36 if tree_row else None)
    body = verify(client, auditor)
    assert body["first_invalid_seq"] == forged
    expected = "not written by the service" if tree_row else "is not the tree's leaf"
    assert expected in body["problem"]
    # The service appends after it, but no checkpoint ever covers the forged row.
    append(session, context, 3)
    context.transparency.publish(session)
    assert session.scalar(select(TreeCheckpoint.size).order_by(TreeCheckpoint.size.desc())) < (
        forged
    )


def test_every_leaf_carries_the_documented_authenticator(
    session: Session, context: AppContext
) -> None:
    """docs/integrity.md, Authenticated events: the key's 4-byte tag, then
    HMAC-SHA256(HMAC-SHA256(private seed, context), leaf hash); computed here with the
    standard library's hmac, as an outside verifier would."""
    append(session, context, 300)
    key = context.ledger.signer.private_key
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    k = hmac.new(seed, b"access-audit event authenticator v1", hashlib.sha256).digest()
    tag = bytes.fromhex(key_id_of(key.public_key()))[:4]
    leaves = session.execute(select(TreeHash.hash, TreeHash.authenticator).where(
        TreeHash.tile_level == 0)).all()  # fmt: skip
    assert len(leaves) == 300
    for leaf, mark in leaves:
        assert mark == tag + hmac.new(k, leaf, hashlib.sha256).digest()


def latest_size(session: Session) -> int:
    return session.scalar(select(TreeCheckpoint.size).order_by(TreeCheckpoint.size.desc())) or 0


class RowsReadBack:
    """Counts the events the publisher reads back from their rows (the full check)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seqs: list[int] = []
        real = repository.stored_leaves

        def counted(session: Session, first: int, last: int, leaves: bool = True) -> Any:
            for row in real(session, first, last, leaves):
                self.seqs.append(row[0])
                yield row

        monkeypatch.setattr(repository, "stored_leaves", counted)


def test_the_publisher_checks_what_this_process_committed_from_the_tree_alone(
    session: Session, context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_back = RowsReadBack(monkeypatch)
    append(session, context, 300)
    session.rollback()  # not in the log: not remembered
    assert len(context.ledger.appended) == 0
    append(session, context, 300)
    session.commit()
    assert len(context.ledger.appended) == 300
    context.transparency.publish(session)
    assert latest_size(session) == 300
    assert read_back.seqs == []  # each leaf compared with the one appended, not rebuilt
    context.transparency.publish(session)  # the next round forgets what is checkpointed
    assert len(context.ledger.appended) == 0


def test_what_the_tree_contradicts_or_the_process_did_not_append_is_checked_from_its_rows(
    session: Session, context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_back = RowsReadBack(monkeypatch)
    append(session, context, 10)
    session.commit()
    # A remembered leaf that the tree does not hold (a stale hint) sends its run of
    # remembered seqs to the full check, which finds the rows authentic: signed.
    context.ledger.appended._add(4, [b"\x00" * 32])
    context.transparency.publish(session)
    assert latest_size(session) == 10
    assert read_back.seqs == list(range(1, 11))
    # A forged row between two committed appends of this process: its seq alone is read
    # back, and refused; no checkpoint covers it.
    forged = forge_next_event(session, True, mark=b"\x00" * 36)
    session.commit()
    append(session, context, 5)
    session.commit()
    read_back.seqs.clear()
    context.transparency.publish(session)
    assert read_back.seqs == [forged]
    assert latest_size(session) == forged - 1


def test_a_rewrite_resigned_with_a_key_added_to_the_database_fails_pinned_verification(
    new_database: Callable[[], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attacker rewrites the tail, rebuilds chain and tree, and signs a checkpoint with
    a key of their own that they publish in `signing_keys`: the database agrees with
    itself. Only a verifier who pins the log's real key catches it."""
    url = new_database()
    context = build_context(make_settings(url, tmp_path))
    context.start()
    with context.database.transaction() as session:
        append(session, context, 40)
        context.transparency.publish(session)
        honest = context.transparency.vkey(session)
        origin = context.transparency.origin_for(session)
    with context.database.transaction() as session:
        attack(session, "events", "tree_hashes", "tree_checkpoints")
        for model in (TreeHash, TreeCheckpoint):
            session.execute(delete(model))
        session.execute(delete(EVENTS).where(EVENTS.c.seq > 30))
        key = Ed25519PrivateKey.generate()
        signer = Signer.from_key(key)
        session.execute(insert(SigningKey), [{
            "key_id": signer.key_id, "public_key_pem": signer.public_key_pem,
            "created_at": context.clock(),
        }])  # fmt: skip
        leaves = [merkle.leaf_hash(data) for _, data in repository.canonical_forms(session, 1, 30)]
        for seq in range(31, 36):
            leaves.append(forge_after_head(session, seq))
        session.execute(insert(TreeHash), [
            {"tile_level": level, "position": position, "hash": value, "authenticator": None}
            for level, position, value in merkle.TreeBuilder().add(leaves)
        ])  # fmt: skip
        root = merkle.root_of(leaves)
        text = Checkpoint(origin, len(leaves), root).text
        note = text + "\n" + NoteSigner(origin, key).signature_line(text)
        session.execute(insert(TreeCheckpoint), [
            {"size": len(leaves), "note": note, "root": root, "signed_at": context.clock()}
        ])  # fmt: skip
    context.dispose()
    monkeypatch.setenv("AUDIT_DATABASE_URL", url)
    monkeypatch.setenv("AUDIT_SIGNING_KEY_FILE", str(tmp_path / "not-here.pem"))
    # Unpinned, and without the service's key at hand, the rewrite looks consistent…
    assert main(["verify"]) == 0
    capsys.readouterr()
    # …but not to whoever holds the log's real vkey.
    assert main(["verify", "--log-vkey", honest]) == 1
    said = capsys.readouterr().out
    assert (
        "INVALID at seq 35: tree checkpoint of size 35 is not signed by a trusted log key" in said
    )


def forge_after_head(session: Session, seq: int) -> bytes:
    """A chained event at `seq` after the head, as the attacker writes it; its leaf hash."""
    head = repository.head(session)
    assert head is not None
    assert head[0] == seq - 1
    row = dict(session.execute(select(EVENTS).where(EVENTS.c.seq == seq - 1)).mappings().one())
    row.update(seq=seq, event_id=str(uuid.uuid4()), actor="attacker", prev_hash=head[1])
    canonical = canonical_bytes(row)
    row["hash"] = chain_hash(head[1], canonical)
    session.execute(insert(EVENTS), [row])
    return merkle.leaf_hash(canonical)


def test_a_tail_cut_after_the_last_chain_checkpoint_is_caught_by_the_tree(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    interval = context.ledger.checkpoint_interval
    append(session, context, interval + 12)  # a chain checkpoint at `interval`, 12 after it
    context.transparency.publish(session)
    head = repository.head(session)
    assert head is not None
    attack(session, "events")
    session.execute(delete(Event.__table__).where(Event.seq > head[0] - 5))
    body = verify(client, auditor)
    assert body["first_invalid_seq"] == head[0] - 4
    assert body["problem"] == (
        f"head seq {head[0] - 5} is behind the tree checkpoint of size {head[0]}"
    )


def test_remembered_leaves_are_bounded_and_dropped_once_checkpointed(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    """Beyond the bound an append is not remembered (its rows get the full check), and a
    worker that loses the turn to sign still drops what another worker signed."""
    small = AppendedLeaves(limit=3)
    small._add(1, [b"a" * 32, b"b" * 32])
    small._add(3, [b"c" * 32, b"d" * 32])  # would pass the bound: not remembered
    assert (len(small), small.run(1, 4)) == (2, (2, [b"a" * 32, b"b" * 32]))
    assert small.run(3, 4) == (4, None)

    url = new_database()
    one, other = (build_context(make_settings(url, tmp_path)) for _ in range(2))
    try:
        with one.database.transaction() as session:
            append(session, one, 20)
        assert len(one.ledger.appended) == 20
        with other.database.transaction() as session:
            other.transparency.publish(session)  # the other worker signs all 20
        held = None
        if not one.database.sqlite:  # the other worker holds the turn to sign
            held = other.database.engine.connect()
            held.execute(select(func.pg_advisory_lock(transparency.PUBLISH_LOCK_KEY)))
        try:
            publisher = one.publisher()
            row = publisher.publish_once()
        finally:
            if held is not None:
                held.close()
        assert row is None  # nothing new to sign, or not this worker's turn
        assert len(one.ledger.appended) == 0
    finally:
        one.dispose()
        other.dispose()
