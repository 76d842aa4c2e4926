"""The log and its witnesses: every new checkpoint goes to each witness with the proof from
what it cosigned; cosignatures are kept and served; a witness that is down never stops an
append; a forked log (the operator's rewrite, re-signed with the log's own key) is refused
by a witness that saw the original."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.context import AppContext, build_context
from app.ledger import transparency
from app.ledger.models import TreeCosignature
from app.ledger.note import Verifier, open_note
from app.ledger.service import NewEvent
from app.main import create_app
from app.witness import Witness, make_server
from tests.conftest import make_settings

NOW = datetime(2025, 11, 3, 16, 0, tzinfo=UTC)
ORIGIN = "audit.dps.example/guard-mission"


def grow(context: AppContext, n: int, salt: str = "") -> None:
    with context.database.transaction() as session:
        context.ledger.append(session, NOW, [
            NewEvent(kind="admin", actor="it.admin", details={"n": i, "salt": salt})
            for i in range(n)
        ])  # fmt: skip
        context.transparency.publish(session)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def log_key(tmp_path: Path) -> Path:
    from app.ledger.signing import Signer

    path = tmp_path / "log.pem"
    path.write_bytes(Signer.new_key_pem())
    return path


@pytest.fixture
def make_log(
    new_database: Callable[[], str], tmp_path: Path, log_key: Path
) -> Iterator[Callable[[list[dict[str, str]]], AppContext]]:
    """A log on a fresh database under ORIGIN and the one log key, told its witnesses."""
    made: list[AppContext] = []

    def make(witnesses: list[dict[str, str]]) -> AppContext:
        settings = make_settings(new_database(), tmp_path, signing_key_file=log_key,
                                 log_origin=ORIGIN, witnesses=witnesses,
                                 witness_timeout_seconds=2)  # fmt: skip
        context = build_context(settings)
        context.start()
        made.append(context)
        return context

    yield make
    for context in made:
        context.dispose()


@pytest.fixture
def witness(tmp_path: Path, log_key: Path) -> Iterator[tuple[Witness, str]]:
    """A running witness of the log; (witness, its base URL)."""
    from app.ledger.signing import Signer

    signer = Signer.from_pem_file(log_key)
    log_verifier = Verifier.from_vkey(_vkey(signer.private_key))
    witness = Witness("oversight.example/w1", Ed25519PrivateKey.generate(),
                      tmp_path / "w1.json", [log_verifier])  # fmt: skip
    server = make_server(witness, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield witness, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _vkey(key: Ed25519PrivateKey) -> str:
    from app.ledger.note import NoteSigner

    return NoteSigner(ORIGIN, key).verifier.vkey


def kept(context: AppContext) -> list[tuple[int, str]]:
    with context.database.reader() as session:
        rows = session.execute(select(TreeCosignature.size, TreeCosignature.witness))
        return sorted((row.size, row.witness) for row in rows)


def test_checkpoints_are_cosigned_served_and_a_down_witness_blocks_nothing(
    make_log: Callable[[list[dict[str, str]]], AppContext], witness: tuple[Witness, str]
) -> None:
    w1, url = witness
    down = Witness("oversight.example/w2", Ed25519PrivateKey.generate(), Path("/nonexistent"), [])
    context = make_log([
        {"url": url, "vkey": w1.vkey},
        {"url": f"http://127.0.0.1:{free_port()}", "vkey": down.vkey},
    ])  # fmt: skip
    first, second = context.submitters()
    grow(context, 10)
    assert first.submit_once()
    with pytest.raises(httpx.TransportError):
        second.submit_once()  # the thread logs it and tries again next round
    grow(context, 300)  # appends go on, the down witness notwithstanding
    assert first.submit_once()
    assert not first.submit_once()  # nothing new to cosign
    # Start-up recorded the policy folder as the log's first event: sizes are one more.
    assert kept(context) == [(11, "oversight.example/w1"), (311, "oversight.example/w1")]
    assert w1.cosigned(ORIGIN)[0] == 311

    client = TestClient(create_app(context=context))
    note = client.get("/v1/log/checkpoint").text
    text, signed = open_note(note, [Verifier.from_vkey(w1.vkey), Verifier.from_vkey(
        client.get("/v1/log/key").text.strip())])  # fmt: skip
    assert text.split("\n")[1] == "311"
    assert {v.name for v in signed} == {"oversight.example/w1", ORIGIN}
    with context.database.reader() as session:  # an inclusion proof carries it too
        assert transparency.inclusion(session, 5, 311).checkpoint == note
    metrics = client.get("/metrics").text
    assert 'audit_witness_lag_events{witness="oversight.example/w1"} 0.0' in metrics
    assert 'audit_witness_lag_events{witness="oversight.example/w2"} 311.0' in metrics
    ready = client.get("/readyz")
    assert ready.status_code == 200  # a lagging witness is reported, not a reason to stop
    assert "behind by 311 events" in ready.json()["checks"]["witness oversight.example/w2"]


def test_a_forked_log_is_refused_by_a_witness_that_saw_the_original(
    make_log: Callable[[list[dict[str, str]]], AppContext], witness: tuple[Witness, str]
) -> None:
    w1, url = witness
    original = make_log([{"url": url, "vkey": w1.vkey}])
    grow(original, 50)
    assert original.submitters()[0].submit_once()
    # The operator rewrites the log from scratch (other events, the same origin and key).
    forked = make_log([{"url": url, "vkey": w1.vkey}])
    grow(forked, 80, salt="rewritten")
    assert not forked.submitters()[0].submit_once()  # 409 (it cosigned 51), then 422
    assert kept(forked) == []
    assert w1.cosigned(ORIGIN)[0] == 51  # 50 and the policy event start-up recorded
    shorter = make_log([{"url": url, "vkey": w1.vkey}])
    grow(shorter, 20, salt="cut")
    assert not shorter.submitters()[0].submit_once()  # the witness is ahead: a rollback
    assert kept(shorter) == []


def test_the_served_app_gets_cosignatures_in_the_background(
    make_log: Callable[[list[dict[str, str]]], AppContext],
    witness: tuple[Witness, str],
    tmp_path: Path,
) -> None:
    w1, url = witness
    context = make_log([{"url": url, "vkey": w1.vkey}])
    settings: Any = context.settings
    settings.checkpoint_seconds = 0.05
    workers = context.background()
    for worker in workers:
        worker.start()
    try:
        grow(context, 30)
        deadline = time.monotonic() + 10
        # 30 and the policy event start-up recorded
        while time.monotonic() < deadline and (31, "oversight.example/w1") not in kept(context):
            time.sleep(0.05)
        assert (31, "oversight.example/w1") in kept(context)
    finally:
        for worker in workers:
            worker.stop()


def test_a_witness_vkey_of_the_wrong_type_stops_start_up(
    new_database: Callable[[], str], tmp_path: Path, log_key: Path
) -> None:
    log_vkey = _vkey(Ed25519PrivateKey.generate())  # type 0x01: a log key, not a witness's
    settings = make_settings(new_database(), tmp_path,
                             witnesses=[{"url": "http://w.example", "vkey": log_vkey}])  # fmt: skip
    with pytest.raises(SystemExit, match="type 0x04"):
        build_context(settings)
