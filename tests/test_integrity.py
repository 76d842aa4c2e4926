"""Contract section 8: verification, signed checkpoints, public keys, key rotation, and the
verifier against a tampered log (the attacker disables the append-only triggers inside the
test's rolled-back transaction)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from app.context import AppContext, build_context
from app.db import read_session, write_session
from app.errors import Conflict
from app.ledger import service as ledger_service
from app.ledger.canonical import canonical_bytes, chain_hash
from app.ledger.models import Checkpoint, Event, SigningKey
from app.ledger.service import NewEvent
from app.ledger.signing import (
    Signer,
    checkpoint_message,
    key_id_of,
    load_public_key,
    verify_signature,
)
from app.ledger.verify import verify_chain
from app.main import create_app
from app.migrate import ROOT
from tests.conftest import make_settings

Headers = Callable[[str], dict[str, str]]
EVENTS = Event.__table__


@pytest.fixture
def auditor(as_role: Headers) -> dict[str, str]:
    return as_role("auditor")


def append(session: Session, context: AppContext, n: int, actor: str = "system") -> None:
    context.ledger.append(
        session,
        context.clock(),
        [NewEvent(kind="admin", actor=actor, action="test", details={"i": i}) for i in range(n)],
    )
    session.flush()


def head_seq(session: Session) -> int:
    return session.scalar(select(func.max(Event.seq))) or 0


def grow_past_checkpoint(session: Session, context: AppContext, extra: int = 20) -> int:
    """Append until the log is `extra` events past a fresh automatic checkpoint; its seq."""
    interval = context.ledger.checkpoint_interval
    checkpoint = (head_seq(session) // interval + 1) * interval
    append(session, context, checkpoint + extra - head_seq(session))
    return checkpoint


def verify(client: TestClient, headers: dict[str, str], **params: int) -> dict[str, Any]:
    response = client.get("/v1/integrity/verify", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def attack(session: Session, *tables: str) -> None:
    """Play the attacker: lift the append-only triggers, for this transaction only."""
    for table in tables or ("events",):
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:  # SQLite DDL is transactional: the rollback puts the triggers back
            for verb in ("update", "delete"):
                session.execute(text(f"DROP TRIGGER {table}_append_only_{verb}"))


def recompute_from(session: Session, seq: int) -> None:
    """Rewrite prev_hash and hash of every event from `seq` on with the real hash function."""
    prev = session.scalar(select(Event.hash).where(Event.seq == seq - 1))
    rows = session.execute(select(EVENTS).where(EVENTS.c.seq >= seq).order_by(EVENTS.c.seq))
    for row in list(rows.mappings()):
        digest = chain_hash(prev, canonical_bytes(row))
        session.execute(
            update(EVENTS).where(EVENTS.c.seq == row["seq"]).values(prev_hash=prev, hash=digest)
        )
        prev = digest


# --- a good log ------------------------------------------------------------------------------


def test_verify_a_good_log(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 30)
    body = verify(client, auditor)
    head = session.execute(select(Event.seq, Event.hash).order_by(Event.seq.desc())).first()
    assert head is not None
    assert body == {
        "valid": True,
        "checked": head.seq,
        "head_seq": head.seq,
        "head_hash": head.hash,
        "first_invalid_seq": None,
        "problem": None,
        "checkpoints_checked": body["checkpoints_checked"],
    }


def test_verify_a_range(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 30)
    top = head_seq(session)
    body = verify(client, auditor, from_seq=top - 9, to_seq=top - 2)
    assert body["valid"] is True
    assert body["checked"] == 8
    assert body["head_seq"] == top
    assert verify(client, auditor, from_seq=top + 5)["checked"] == 0


@pytest.mark.parametrize(
    "params", [{"from_seq": 5, "to_seq": 4}, {"from_seq": 0}, {"to_seq": 0}, {"from_seq": "x"}]
)
def test_verify_rejects_bad_ranges(
    client: TestClient, auditor: dict[str, str], params: dict[str, Any]
) -> None:
    response = client.get("/v1/integrity/verify", params=params, headers=auditor)
    assert response.status_code == 422


# --- checkpoints and keys ------------------------------------------------------------------------


def test_checkpoint_on_demand_verifies_from_its_json(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 3)
    response = client.post("/v1/integrity/checkpoints", headers=auditor)
    assert response.status_code == 201
    checkpoint = response.json()
    head = session.execute(select(Event.seq, Event.hash).order_by(Event.seq.desc())).first()
    assert head is not None
    assert (checkpoint["seq"], checkpoint["hash"]) == (head.seq, head.hash)
    assert set(checkpoint) == {"seq", "hash", "signed_at", "key_id", "signature"}
    assert checkpoint["signed_at"].endswith("Z")
    assert len(checkpoint["signed_at"]) == 27

    pem = client.get("/v1/integrity/public-key", headers=auditor)
    assert pem.status_code == 200
    assert pem.text.startswith("-----BEGIN PUBLIC KEY-----")
    assert pem.headers["x-key-id"] == checkpoint["key_id"]
    message = checkpoint_message(
        checkpoint["seq"], checkpoint["hash"], checkpoint["signed_at"], checkpoint["key_id"]
    )
    assert verify_signature(pem.text, message, checkpoint["signature"])

    listed = client.get("/v1/integrity/checkpoints", headers=auditor).json()
    assert listed[0] == checkpoint  # newest first


def test_checkpoints_page_newest_or_oldest_first(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    for n in (1, 2, 3):
        append(session, context, n)
        assert client.post("/v1/integrity/checkpoints", headers=auditor).status_code == 201
    first_page = client.get("/v1/integrity/checkpoints?limit=2", headers=auditor)
    first = first_page.json()
    assert len(first) == 2
    assert first[0]["seq"] > first[1]["seq"]
    second = client.get(
        "/v1/integrity/checkpoints",
        params={"limit": 2, "cursor": first_page.headers["x-next-cursor"]},
        headers=auditor,
    ).json()
    assert second[0]["seq"] < first[1]["seq"]
    oldest = client.get("/v1/integrity/checkpoints?order=oldest&limit=1000", headers=auditor)
    seqs = [item["seq"] for item in oldest.json()]
    assert seqs == sorted(seqs)
    assert "x-next-cursor" not in oldest.headers
    bad = client.get("/v1/integrity/checkpoints?cursor=abc", headers=auditor)
    assert bad.status_code == 422
    assert client.get("/v1/integrity/checkpoints?limit=1001", headers=auditor).status_code == 422


def test_signing_an_empty_log_is_a_conflict(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    context = build_context(make_settings(new_database(), tmp_path))
    try:
        with context.database.transaction() as session, pytest.raises(Conflict):
            ledger_service.sign_checkpoint(session, context.ledger)
    finally:
        context.dispose()


def test_public_keys_and_an_unknown_key_id(
    client: TestClient, context: AppContext, auditor: dict[str, str]
) -> None:
    keys = client.get("/v1/integrity/public-keys", headers=auditor).json()
    current = [key for key in keys if key["current"]]
    assert [key["key_id"] for key in current] == [context.ledger.signer.key_id]
    public = load_public_key(current[0]["public_key_pem"])
    assert public is not None
    assert key_id_of(public) == current[0]["key_id"]
    missing = client.get("/v1/integrity/public-key?key_id=0123456789abcdef", headers=auditor)
    assert missing.status_code == 404


def test_the_service_publishes_its_key_at_start_up(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    settings = make_settings(new_database(), tmp_path)
    with TestClient(create_app(settings=settings)) as running:
        context: AppContext = running.app.state.context
        with context.database.reader() as session:
            published = session.scalars(select(SigningKey.key_id)).all()
        assert published == [context.ledger.signer.key_id]


def test_key_rotation_keeps_old_checkpoints_verifiable(
    client: TestClient,
    session: Session,
    context: AppContext,
    auditor: dict[str, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    old_key = context.ledger.signer.key_id
    append(session, context, 2)
    before = client.post("/v1/integrity/checkpoints", headers=auditor).json()
    # The operator installs a new AUDIT_SIGNING_KEY_FILE: a new key id, same database.
    rotated = build_context(make_settings(database_url, tmp_path))
    rotated.dispose()  # only its ledger is used, on the test's session
    new_key = rotated.ledger.signer.key_id
    assert new_key != old_key
    append(session, rotated, 2)
    after = rotated.ledger.sign_head(session)
    assert after is not None
    session.flush()

    # Either service verifies both checkpoints: every key that signed is published by id.
    for app_context in (context, rotated):
        app = create_app(context=app_context)
        app.dependency_overrides[read_session] = lambda: session
        app.dependency_overrides[write_session] = lambda: session
        with TestClient(app) as other:
            assert verify(other, auditor)["valid"] is True
    keys = {k["key_id"] for k in client.get("/v1/integrity/public-keys", headers=auditor).json()}
    assert {old_key, new_key} <= keys
    pem = client.get(f"/v1/integrity/public-key?key_id={new_key}", headers=auditor).text
    assert pem == rotated.ledger.signer.public_key_pem
    message = checkpoint_message(after["seq"], after["hash"], after["signed_at"], new_key)
    assert verify_signature(pem, message, after["signature"])
    assert before["key_id"] == old_key


# --- a tampered log ------------------------------------------------------------------------------


def test_edited_field_is_a_hash_mismatch_at_its_seq(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 10)
    target = head_seq(session) - 4
    attack(session)
    session.execute(update(EVENTS).where(EVENTS.c.seq == target).values(actor="someone.else"))
    body = verify(client, auditor)
    assert body["valid"] is False
    assert body["first_invalid_seq"] == target
    assert body["problem"] == f"hash mismatch at seq {target}"
    assert body["checked"] == target - 1


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("recorded_at", "2025-10-01 00:00:00.000001"),
        ("break_glass", True),
        ("flags", ["after_hours"]),
        ("details", {"i": 99}),
        ("justification", ""),
    ],
)
def test_every_hashed_column_is_covered(
    client: TestClient,
    session: Session,
    context: AppContext,
    auditor: dict[str, str],
    column: str,
    value: Any,
) -> None:
    append(session, context, 3)
    target = head_seq(session) - 1
    attack(session)
    if column == "recorded_at":
        session.execute(
            text("UPDATE events SET recorded_at = recorded_at + interval '1 us' WHERE seq = :s")
            if session.get_bind().dialect.name == "postgresql"
            else text("UPDATE events SET recorded_at = :v WHERE seq = :s"),
            {"s": target, "v": value},
        )
    else:
        session.execute(update(EVENTS).where(EVENTS.c.seq == target).values({column: value}))
    body = verify(client, auditor)
    assert (body["first_invalid_seq"], body["problem"]) == (
        target,
        f"hash mismatch at seq {target}",
    )


def test_deleted_row_is_a_gap(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 10)
    target = head_seq(session) - 5
    attack(session)
    session.execute(delete(EVENTS).where(EVENTS.c.seq == target))
    body = verify(client, auditor)
    assert body["first_invalid_seq"] == target
    assert body["problem"] == f"gap in seq: {target + 1} follows {target - 1}"


def test_swapped_rows_are_caught_at_the_first(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 10)
    a = head_seq(session) - 6
    attack(session)
    rows = [
        dict(row)
        for row in session.execute(
            select(EVENTS).where(EVENTS.c.seq.in_([a, a + 1])).order_by(EVENTS.c.seq)
        ).mappings()
    ]
    session.execute(delete(EVENTS).where(EVENTS.c.seq.in_([a, a + 1])))
    rows[0]["seq"], rows[1]["seq"] = a + 1, a  # swap the contents, keep the seqs
    session.execute(insert(EVENTS), rows)
    body = verify(client, auditor)
    assert (body["first_invalid_seq"], body["problem"]) == (a, f"hash mismatch at seq {a}")


def test_relinked_row_is_a_broken_link(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 6)
    target = head_seq(session) - 2
    attack(session)
    # A forged prev_hash with a hash recomputed to match it: only the link gives it away.
    forged = "ab" * 32
    row = session.execute(select(EVENTS).where(EVENTS.c.seq == target)).mappings().one()
    digest = chain_hash(forged, canonical_bytes(row))
    session.execute(
        update(EVENTS).where(EVENTS.c.seq == target).values(prev_hash=forged, hash=digest)
    )
    body = verify(client, auditor)
    assert body["first_invalid_seq"] == target
    assert body["problem"] == (
        f"broken link at seq {target}: prev_hash does not match seq {target - 1}"
    )


def test_truncated_tail_behind_a_checkpoint(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    checkpoint = grow_past_checkpoint(session, context)
    attack(session)
    session.execute(delete(EVENTS).where(EVENTS.c.seq >= checkpoint - 2))
    body = verify(client, auditor)
    assert body["first_invalid_seq"] == checkpoint - 2
    assert body["head_seq"] == checkpoint - 3
    assert body["problem"] == (
        f"head seq {checkpoint - 3} is behind the latest checkpoint at seq {checkpoint}"
    )


def test_truncated_tail_behind_an_on_demand_checkpoint(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 5)
    signed = client.post("/v1/integrity/checkpoints", headers=auditor).json()["seq"]
    attack(session)
    session.execute(delete(EVENTS).where(EVENTS.c.seq == signed))
    body = verify(client, auditor)
    assert body["first_invalid_seq"] == signed
    assert body["problem"] == (
        f"head seq {signed - 1} is behind the latest checkpoint at seq {signed}"
    )


def test_recomputed_chain_is_caught_by_the_checkpoint(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    checkpoint = grow_past_checkpoint(session, context)
    target = checkpoint - 300
    attack(session)
    session.execute(update(EVENTS).where(EVENTS.c.seq == target).values(actor="someone.else"))
    recompute_from(session, target)
    chain = verify_chain(session)  # the chain alone: caught at the checkpoint
    assert chain.first_invalid_seq == checkpoint
    assert chain.problem == f"checkpoint at seq {checkpoint} does not match the event's hash"
    assert chain.checked == checkpoint - 1
    caught_by_the_tree(verify(client, auditor), target)


def test_recomputed_chain_with_checkpoints_removed_is_caught(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    checkpoint = grow_past_checkpoint(session, context)
    previous = checkpoint - context.ledger.checkpoint_interval
    attack(session, "events", "checkpoints")
    session.execute(update(EVENTS).where(EVENTS.c.seq == checkpoint - 300).values(actor="x"))
    recompute_from(session, checkpoint - 300)
    session.execute(delete(Checkpoint).where(Checkpoint.seq > previous))
    chain = verify_chain(session)
    assert chain.first_invalid_seq == checkpoint
    assert chain.problem == f"missing checkpoint: none from seq {previous + 1} to seq {checkpoint}"
    caught_by_the_tree(verify(client, auditor), checkpoint - 300)


def test_rewritten_checkpoint_has_an_invalid_signature(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    checkpoint = grow_past_checkpoint(session, context)
    attack(session, "events", "checkpoints")
    session.execute(update(EVENTS).where(EVENTS.c.seq == checkpoint - 300).values(actor="x"))
    recompute_from(session, checkpoint - 300)
    new_hash = session.scalar(select(Event.hash).where(Event.seq == checkpoint))
    session.execute(update(Checkpoint).where(Checkpoint.seq == checkpoint).values(hash=new_hash))
    chain = verify_chain(session)
    assert chain.first_invalid_seq == checkpoint
    assert chain.problem == f"checkpoint at seq {checkpoint} has an invalid signature"
    caught_by_the_tree(verify(client, auditor), checkpoint - 300)


def caught_by_the_tree(body: dict[str, Any], edited: int) -> None:
    """A re-chained edit is caught at the edited event itself: the tree still holds the
    leaf of what the service wrote."""
    assert body["first_invalid_seq"] == edited
    assert body["problem"] == f"event at seq {edited} is not the tree's leaf for it"


def test_checkpoint_by_an_unpublished_key(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 2)
    seq = client.post("/v1/integrity/checkpoints", headers=auditor).json()["seq"]
    attack(session, "checkpoints")
    session.execute(
        update(Checkpoint).where(Checkpoint.seq == seq).values(key_id="feedfacefeedface")
    )
    body = verify(client, auditor)
    assert body["first_invalid_seq"] == seq
    assert (
        body["problem"] == f"checkpoint at seq {seq} is signed by an unknown key feedfacefeedface"
    )


def test_a_range_sees_tampering_inside_it_only(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    append(session, context, 20)
    top = head_seq(session)
    attack(session)
    session.execute(update(EVENTS).where(EVENTS.c.seq == top - 15).values(actor="x"))
    assert verify(client, auditor, from_seq=top - 10)["valid"] is True
    body = verify(client, auditor, from_seq=top - 18, to_seq=top - 12)
    assert body["first_invalid_seq"] == top - 15
    # A range whose end was cut out, with later events kept, is a gap too.
    session.execute(delete(EVENTS).where(EVENTS.c.seq.between(top - 8, top - 4)))
    body = verify(client, auditor, from_seq=top - 10, to_seq=top - 6)
    assert body["problem"] == f"gap in seq: {top - 3} follows {top - 9}"
    body = verify(client, auditor, from_seq=top - 6, to_seq=top - 5)
    assert body["problem"] == f"gap in seq: expected seq {top - 6} first, found {top - 3}"


def test_unreadable_stored_value_is_a_mismatch_not_a_crash(
    client: TestClient, session: Session, context: AppContext, auditor: dict[str, str]
) -> None:
    if session.get_bind().dialect.name == "postgresql":
        pytest.skip("jsonb cannot hold text that is not JSON")
    append(session, context, 3)
    target = head_seq(session) - 1
    attack(session)
    session.execute(text("UPDATE events SET flags = '[\"x\"' WHERE seq = :s"), {"s": target})
    body = verify(client, auditor)
    assert (body["first_invalid_seq"], body["problem"]) == (
        target,
        f"hash mismatch at seq {target}",
    )


def test_streaming_in_small_batches_gives_the_same_answer(
    session: Session, context: AppContext
) -> None:
    append(session, context, 25)
    whole = verify_chain(session)
    batched = verify_chain(session, batch_size=3)
    assert whole == batched
    assert whole.valid


# --- the command line --------------------------------------------------------------------------


def test_cli_verify_exits_0_then_1_naming_the_break(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    context = build_context(make_settings(url, tmp_path))
    with context.database.transaction() as session:
        append(session, context, 12)
    env = {**os.environ, "AUDIT_DATABASE_URL": url}
    command = [sys.executable, "-m", "app.cli", "verify"]
    good = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("valid: 12 events")

    with context.database.transaction() as session:
        attack(session)
        session.execute(update(EVENTS).where(EVENTS.c.seq == 7).values(actor="someone.else"))
    context.dispose()
    bad = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    assert bad.returncode == 1
    assert bad.stdout.strip() == "INVALID at seq 7: hash mismatch at seq 7"
    ranged = subprocess.run(
        [*command, "--from-seq", "8", "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert ranged.returncode == 0
    assert '"checked": 5' in ranged.stdout


def test_cli_verify_can_pin_the_checkpoint_key(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    """--public-key: only the given keys may have signed a checkpoint; the keys published in
    the database are not consulted, so a key slipped in beside them cannot vouch for one."""
    url = new_database()
    context = build_context(make_settings(url, tmp_path))
    context.ledger.checkpoint_interval = 5
    with context.database.transaction() as session:
        append(session, context, 12)  # checkpoints at seq 5 and 10
    context.dispose()
    ours = tmp_path / "service.pub.pem"
    ours.write_text(context.ledger.signer.public_key_pem)
    theirs = tmp_path / "other.pub.pem"
    other = Signer.from_key(Ed25519PrivateKey.generate())
    theirs.write_text(other.public_key_pem)
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")
    env = {**os.environ, "AUDIT_DATABASE_URL": url}

    def verify_with(*keys: Path) -> subprocess.CompletedProcess[str]:
        options = [arg for key in keys for arg in ("--public-key", str(key))]
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "verify", *options],
            env=env, capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip

    pinned = verify_with(ours)
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.startswith("valid: 12 events and 2 checkpoints")
    assert verify_with(theirs, ours).returncode == 0  # rotated keys: any of those given
    wrong = verify_with(theirs)
    assert wrong.returncode == 1
    assert wrong.stdout.strip() == (
        f"INVALID at seq 5: checkpoint at seq 5 is signed by an unknown key "
        f"{context.ledger.signer.key_id}"
    )
    unreadable = verify_with(not_a_key)
    assert unreadable.returncode == 2
    assert "is not an Ed25519 public key" in unreadable.stderr
