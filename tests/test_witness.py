"""The witness (C2SP tlog-witness, tlog-cosignature/v1): it cosigns only trees that extend
the one it cosigned, answers every refusal with the spec's status, and keeps its state
across restarts."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.cli import main
from app.ledger import merkle
from app.ledger.note import COSIGNATURE_V1, Checkpoint, NoteSigner, Verifier, open_note
from app.witness import Witness, load_or_create_key, make_server

ORIGIN = "audit.example/guard-mission"


class Log:
    """A log in memory: leaves, signed checkpoints, consistency proofs."""

    def __init__(self, key: Ed25519PrivateKey, origin: str = ORIGIN, salt: str = "") -> None:
        self.signer = NoteSigner(origin, key)
        self.leaves = [merkle.leaf_hash(f"{salt}event {i}".encode()) for i in range(1000)]

    def root(self, size: int) -> bytes:
        return merkle.root_of(self.leaves[:size])

    def checkpoint(self, size: int, root: bytes | None = None) -> str:
        text = Checkpoint(self.signer.name, size, self.root(size) if root is None else root).text
        return text + "\n" + self.signer.signature_line(text)

    def proof(self, old: int, new: int) -> list[bytes]:
        leaves = self.leaves

        def hash_at(level: int, index: int) -> bytes:
            return merkle.root_of(leaves[index << level : (index + 1) << level])

        return merkle.consistency_proof(hash_at, old, new)

    def body(self, old: int, new: int, proof: list[bytes] | None = None) -> bytes:
        lines = [f"old {old}", *(base64.b64encode(h).decode() for h in
                                 (self.proof(old, new) if proof is None else proof))]  # fmt: skip
        return ("\n".join(lines) + "\n\n" + self.checkpoint(new)).encode()


@pytest.fixture
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def log(log_key: Ed25519PrivateKey) -> Log:
    return Log(log_key)


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> Witness:
    key = Ed25519PrivateKey.generate()
    return Witness("oversight.example/w1", key, tmp_path / "state.json", [log.signer.verifier])


def cosignature_verifies(witness: Witness, checkpoint: str, line: str) -> bool:
    verifier = Verifier.from_vkey(witness.vkey)
    assert verifier.kind == COSIGNATURE_V1
    _, signed = open_note(checkpoint + line, [verifier])
    return signed == [verifier]


def test_a_first_checkpoint_and_each_that_extends_it_are_cosigned(
    witness: Witness, log: Log
) -> None:
    first = witness.add_checkpoint(log.body(0, 10))
    assert first.status == 200
    assert cosignature_verifies(witness, log.checkpoint(10), first.body)
    grown = witness.add_checkpoint(log.body(10, 300))
    assert grown.status == 200
    assert cosignature_verifies(witness, log.checkpoint(300), grown.body)
    assert witness.cosigned(ORIGIN) == (300, log.root(300))
    again = witness.add_checkpoint(log.body(300, 300))  # the same tree again: still fine
    assert again.status == 200


def test_a_stale_old_size_is_409_with_the_size_it_cosigned(witness: Witness, log: Log) -> None:
    assert witness.add_checkpoint(log.body(0, 50)).status == 200
    stale = witness.add_checkpoint(log.body(20, 60))
    assert (stale.status, stale.body, stale.content_type) == (409, "50\n", "text/x.tlog.size")


def test_a_fork_is_refused_and_never_cosigned(witness: Witness, log: Log, log_key) -> None:
    """The operator rewrites the log and re-signs it with the same key: a different tree of
    a size the witness cosigned, or one that does not extend it, is 422."""
    assert witness.add_checkpoint(log.body(0, 100)).status == 200
    forked = Log(log_key, salt="rewritten ")
    same_size = witness.add_checkpoint(forked.body(100, 100))
    assert same_size.status == 422
    longer = witness.add_checkpoint(
        forked.body(100, 200, proof=forked.proof(100, 200))
    )  # a proof of the rewritten tree, not of the one the witness saw
    assert longer.status == 422
    assert witness.cosigned(ORIGIN) == (100, log.root(100))


def test_a_rollback_is_refused(witness: Witness, log: Log) -> None:
    assert witness.add_checkpoint(log.body(0, 100)).status == 200
    smaller = witness.add_checkpoint(log.body(100, 50, proof=[]))
    assert smaller.status == 400  # old beyond the checkpoint's size
    assert witness.cosigned(ORIGIN)[0] == 100


def test_unknown_logs_and_bad_signatures(witness: Witness, log: Log, tmp_path: Path) -> None:
    stranger = Log(Ed25519PrivateKey.generate(), origin="other.example/log")
    assert witness.add_checkpoint(stranger.body(0, 5)).status == 404
    impostor = Log(Ed25519PrivateKey.generate())  # the right origin, another key
    assert witness.add_checkpoint(impostor.body(0, 5)).status == 403
    tampered = log.body(0, 5).replace(b"\n5\n", b"\n6\n")  # the signature no longer matches
    assert witness.add_checkpoint(tampered).status == 403


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"old 1\n", 400),  # no blank line, no checkpoint
        (b"old 01\n\n", 400),
        (b"old x\n\n", 400),
        (b"\xff\n\n", 400),
    ],
)
def test_malformed_requests_are_400(witness: Witness, body: bytes, status: int) -> None:
    assert witness.add_checkpoint(body).status == status


def test_proofs_that_do_not_hold_are_422(witness: Witness, log: Log) -> None:
    assert witness.add_checkpoint(log.body(0, 0)).status == 200  # the empty tree
    assert witness.add_checkpoint(log.body(0, 8, proof=[log.leaves[0]])).status == 422
    bad_empty = log.checkpoint(0, root=b"\x01" * 32)
    assert witness.add_checkpoint(b"old 0\n\n" + bad_empty.encode()).status == 422
    assert witness.add_checkpoint(log.body(0, 8)).status == 200
    wrong = log.proof(8, 20)
    wrong[0] = bytes(32)
    assert witness.add_checkpoint(log.body(8, 20, proof=wrong)).status == 422


def test_the_state_survives_a_restart_and_is_private(
    tmp_path: Path, log: Log, witness: Witness
) -> None:
    assert witness.add_checkpoint(log.body(0, 40)).status == 200
    state = tmp_path / "state.json"
    assert json.loads(state.read_text())[ORIGIN]["size"] == 40
    key_file = tmp_path / "witness.pem"
    key = load_or_create_key(key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_or_create_key(key_file).public_key().public_bytes_raw() == (
        key.public_key().public_bytes_raw()
    )
    restarted = Witness("oversight.example/w1", key, state, [log.signer.verifier])
    assert restarted.cosigned(ORIGIN) == (40, log.root(40))
    assert restarted.add_checkpoint(log.body(0, 41)).status == 409


def test_the_witness_serves_add_checkpoint_over_http(witness: Witness, log: Log) -> None:
    server = make_server(witness, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        response = httpx.post(f"{base}/add-checkpoint", content=log.body(0, 12))
        assert response.status_code == 200
        assert cosignature_verifies(witness, log.checkpoint(12), response.text)
        stale = httpx.post(f"{base}/add-checkpoint", content=log.body(0, 13))
        assert (stale.status_code, stale.text) == (409, "12\n")
        assert httpx.post(f"{base}/elsewhere", content=b"").status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_witness_vkey_prints_a_cosignature_vkey(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["witness", "vkey", "--name", "dps.example/w1", "--key", str(tmp_path / "k.pem")]) == 0
    )
    verifier = Verifier.from_vkey(capsys.readouterr().out.strip())
    assert (verifier.name, verifier.kind) == ("dps.example/w1", COSIGNATURE_V1)
