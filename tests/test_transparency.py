"""The verifiable log (contract section 13): the tree kept at append, C2SP checkpoints,
tiles, entry bundles and proofs, checked with the RFC 9162 verifiers and the signed-note
code (themselves checked against the RFC 6962 vectors and the C2SP examples)."""

from __future__ import annotations

import asyncio
import base64
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.config import WitnessSetting
from app.context import AppContext, build_context
from app.ledger import merkle, repository, transparency, witnessing
from app.ledger.models import TreeCheckpoint, TreeHash
from app.ledger.note import Checkpoint, Verifier, open_note
from app.ledger.service import NewEvent
from app.migrate import downgrade, upgrade
from app.witness import Witness
from tests.conftest import make_settings

NOW = datetime(2025, 11, 3, 16, 0, tzinfo=UTC)


def append(context: AppContext, session: Session, sizes: list[int]) -> None:
    for n in sizes:
        context.ledger.append(
            session,
            NOW,
            [NewEvent(kind="admin", actor="it.admin", details={"n": i}) for i in range(n)],
        )


def leaves(session: Session) -> list[bytes]:
    head = repository.head(session)
    size = head[0] if head else 0
    return [merkle.leaf_hash(data) for _, data in repository.canonical_forms(session, 1, size)]


def stored_tiles(session: Session) -> dict[tuple[int, int], bytes]:
    tiles: dict[tuple[int, int], bytes] = {}
    for row in session.execute(select(TreeHash).order_by(TreeHash.tile_level, TreeHash.position)):
        hash_row = row[0]
        key = (hash_row.tile_level, hash_row.position // 256)
        tiles[key] = tiles.get(key, b"") + hash_row.hash
    return tiles


def opened(note: str, vkey: str) -> Checkpoint:
    text_, _ = open_note(note, [Verifier.from_vkey(vkey)])
    return Checkpoint.parse(text_)


def test_the_tree_is_kept_at_append_tile_for_tile(context: AppContext, session: Session) -> None:
    """Single events, batches across tile boundaries: the stored hashes are the C2SP tiles
    of the tree over the events' canonical bytes."""
    rng = random.Random(7)
    append(context, session, [rng.choice([1, 2, 17, 300]) for _ in range(12)] + [256])
    assert stored_tiles(session) == merkle.tiles_of(leaves(session))


def test_checkpoints_are_signed_notes_of_the_tree_each_consistent_with_the_last(
    context: AppContext, session: Session
) -> None:
    log = context.transparency
    vkey = log.vkey(session)
    append(context, session, [5])
    first = log.publish(session)
    assert first is not None
    assert log.publish(session) is None  # nothing new: no second checkpoint of one size
    append(context, session, [300, 1])
    second = log.publish(session)
    assert second is not None
    old, new = opened(first.note, vkey), opened(second.note, vkey)
    assert old.origin == new.origin == log.origin_for(session)
    assert new.root == merkle.root_of(leaves(session))
    proof = transparency.consistency(session, old.size, new.size)
    merkle.verify_consistency(
        old.size, new.size, old.root, new.root, [base64.b64decode(h) for h in proof.hashes]
    )
    assert vkey.startswith(f"{log.origin_for(session)}+")


def test_the_public_endpoints_serve_checkpoint_key_tiles_and_consistency(
    client: TestClient, context: AppContext, session: Session
) -> None:
    append(context, session, [3])
    context.transparency.publish(session)
    small = client.get("/v1/log/checkpoint")
    append(context, session, [520])
    context.transparency.publish(session)
    latest = client.get("/v1/log/checkpoint")  # no token: public
    assert latest.status_code == 200
    assert latest.headers["content-type"] == "text/plain; charset=utf-8"
    vkey = client.get("/v1/log/key").text.strip()
    old, new = opened(small.text, vkey), opened(latest.text, vkey)

    # The tiles a client fetches for the new tree rebuild its root.
    def tile(level: int, index: int) -> bytes:
        width = merkle.tile_width(new.size, level, index)
        partial = None if width == merkle.TILE_WIDTH else width
        response = client.get("/v1/log/" + merkle.tile_path(level, index, partial))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        assert "immutable" in response.headers["cache-control"]
        return response.content

    assert merkle.range_hash(merkle.tile_hash_at(tile), 0, new.size) == new.root
    proof = client.get("/v1/log/proof/consistency", params={"old": old.size, "new": new.size})
    assert proof.status_code == 200
    body = proof.json()
    assert (body["old_size"], body["new_size"]) == (old.size, new.size)
    merkle.verify_consistency(
        old.size, new.size, old.root, new.root, [base64.b64decode(h) for h in body["hashes"]]
    )
    same = client.get("/v1/log/proof/consistency", params={"old": 0, "new": new.size})
    assert same.json()["hashes"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [({"old": 1, "new": 10_000}, "new"), ({"old": 9, "new": 8}, "old")],
)
def test_a_consistency_proof_beyond_the_checkpoint_or_backwards_is_422(
    client: TestClient, context: AppContext, session: Session, params: dict[str, int], field: str
) -> None:
    append(context, session, [10])
    context.transparency.publish(session)
    response = client.get("/v1/log/proof/consistency", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/001",  # beyond the tree
        "tile/0/000",  # full, while the tree has a partial tile 0
        "tile/0/000.p/200",  # wider than the tree
        "tile/1/000.p/1",  # no level-1 hash yet
        "tile/00/000",
        "tile/64/000",
        "tile/0/0",
        "tile/0/x000/000",
    ],
)
def test_tiles_the_tree_does_not_have_are_404(
    client: TestClient, context: AppContext, session: Session, path: str
) -> None:
    append(context, session, [100])
    assert client.get(f"/v1/log/{path}").status_code == 404


def test_entry_bundles_hash_to_the_level_0_tiles(
    client: TestClient,
    context: AppContext,
    session: Session,
    as_role: Callable[[str], dict[str, str]],
) -> None:
    append(context, session, [300])
    size = repository.head(session)[0]  # type: ignore[index]
    headers = as_role("auditor")
    for index in range(2):
        width = merkle.tile_width(size, 0, index)
        partial = None if width == 256 else width
        bundle = client.get("/v1/log/" + merkle.tile_path(None, index, partial), headers=headers)
        assert bundle.status_code == 200, bundle.text
        entries, data = [], bundle.content
        while data:
            n = int.from_bytes(data[:2], "big")
            entries.append(data[2 : 2 + n])
            data = data[2 + n :]
        hashes = client.get("/v1/log/" + merkle.tile_path(0, index, partial)).content
        assert b"".join(merkle.leaf_hash(e) for e in entries) == hashes
    assert client.get("/v1/log/tile/entries/000").status_code == 401


def test_an_inclusion_proof_and_a_tlog_proof_verify_against_the_signed_root(
    client: TestClient,
    context: AppContext,
    session: Session,
    as_role: Callable[[str], dict[str, str]],
) -> None:
    append(context, session, [777])
    context.transparency.publish(session)
    headers = as_role("oversight")
    vkey = client.get("/v1/log/key").text.strip()
    forms = dict(repository.canonical_forms(session, 1, 10_000))
    for seq in (1, 256, 700):
        body = client.get("/v1/log/proof/inclusion", params={"seq": seq}, headers=headers).json()
        checkpoint = opened(body["checkpoint"], vkey)
        assert body["tree_size"] == checkpoint.size
        assert body["index"] == seq - 1
        leaf = merkle.leaf_hash(forms[seq])
        assert base64.b64decode(body["leaf_hash"]) == leaf
        path = [base64.b64decode(h) for h in body["hashes"]]
        merkle.verify_inclusion(leaf, seq - 1, checkpoint.size, path, checkpoint.root)

        bundle = client.get(f"/v1/events/{seq}/proof", headers=headers).text
        head, _, note = bundle.partition("\n\n")
        lines = head.split("\n")
        assert lines[:2] == ["c2sp.org/tlog-proof@v1", f"index {seq - 1}"]
        signed = opened(note, vkey)
        proof = [base64.b64decode(h) for h in lines[2:]]
        merkle.verify_inclusion(leaf, seq - 1, signed.size, proof, signed.root)


def test_inclusion_proofs_name_what_is_wrong(
    client: TestClient,
    context: AppContext,
    session: Session,
    as_role: Callable[[str], dict[str, str]],
) -> None:
    append(context, session, [20])
    context.transparency.publish(session)
    headers = as_role("auditor")
    size = repository.head(session)[0]  # type: ignore[index]
    beyond = client.get("/v1/log/proof/inclusion", params={"seq": size + 1}, headers=headers)
    assert beyond.status_code == 422
    assert beyond.json()["detail"][0]["loc"] == ["query", "seq"]
    unsigned = client.get(
        "/v1/log/proof/inclusion", params={"seq": 1, "size": size - 1}, headers=headers
    )
    assert unsigned.status_code == 404
    # An event not yet in a signed tree has no tlog-proof (yet): 404, naming no query.
    assert client.get(f"/v1/events/{size + 1}/proof", headers=headers).status_code == 404


def test_the_tree_and_its_checkpoints_are_append_only(
    context: AppContext, session: Session
) -> None:
    append(context, session, [2])
    context.transparency.publish(session)
    for statement in (
        "UPDATE tree_hashes SET hash = hash",
        "DELETE FROM tree_hashes",
        "UPDATE tree_checkpoints SET note = 'x'",
        "DELETE FROM log_settings",
    ):
        with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
            session.execute(text(statement))


def test_the_migration_builds_the_tree_of_an_existing_log(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    """A log written before the tree existed (revision 0004): upgrading builds the very
    tree the append keeps."""
    url = new_database()
    context = build_context(make_settings(url, tmp_path))
    with context.database.transaction() as session:
        append(context, session, [3, 600, 1])
    with context.database.reader() as session:
        kept = stored_tiles(session)
    context.dispose()
    downgrade(url, "0004")
    upgrade(url)
    context = build_context(make_settings(url, tmp_path))
    with context.database.reader() as session:
        assert stored_tiles(session) == kept == merkle.tiles_of(leaves(session))
    context.dispose()


def test_the_served_app_publishes_a_checkpoint_within_the_interval(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    settings = make_settings(url, tmp_path, checkpoint_seconds=0.05)
    context = build_context(settings)
    context.start()  # start-up records the policy's first version and publishes size 1
    publisher = context.publisher()
    publisher.start()
    try:
        with context.database.transaction() as session:
            append(context, session, [42])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with context.database.reader() as session:
                sizes = list(session.scalars(select(TreeCheckpoint.size)))
            if 43 in sizes:
                break
            time.sleep(0.02)
        assert sorted(sizes) == [1, 43]
        with context.database.reader() as session:
            assert session.scalar(select(func.count()).select_from(TreeCheckpoint)) == 2
    finally:
        publisher.stop()
        context.dispose()


def test_proofs_come_from_the_kept_tiles_and_a_grown_tree_reads_past_them(
    client: TestClient,
    context: AppContext,
    session: Session,
    as_role: Callable[[str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = as_role("auditor")
    vkey = client.get("/v1/log/key").text.strip()

    def proven(seq: int, size: int | None = None) -> Checkpoint:
        params = {"seq": seq} if size is None else {"seq": seq, "size": size}
        response = client.get("/v1/log/proof/inclusion", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        checkpoint = opened(body["checkpoint"], vkey)
        leaf = merkle.leaf_hash(dict(repository.canonical_forms(session, seq, seq))[seq])
        assert base64.b64decode(body["leaf_hash"]) == leaf
        path = [base64.b64decode(h) for h in body["hashes"]]
        merkle.verify_inclusion(leaf, seq - 1, checkpoint.size, path, checkpoint.root)
        return checkpoint

    append(context, session, [300])
    context.transparency.publish(session)
    small = proven(290)
    assert 290 < small.size < 2 * merkle.TILE_WIDTH  # tile 0/1 is partial
    kept = context.transparency.tiles
    width = small.size - merkle.TILE_WIDTH
    assert kept.get(0, 1, width) is not None  # the partial tile is kept ...
    assert kept.get(0, 1, width + 1) is None  # ... for trees it is long enough for

    # A proof already made reads nothing from the database again.
    def no_reads(*args: object) -> bytes:
        raise AssertionError("the tile was read again")

    with monkeypatch.context() as patch:
        patch.setattr(transparency, "stored_tile", no_reads)
        assert proven(290) == small

    append(context, session, [400])
    context.transparency.publish(session)
    big = proven(small.size + 400)
    for seq in (290, small.size, small.size + 1, 600):
        assert proven(seq) == big
    assert proven(290, size=small.size) == small
    params = {"old": small.size, "new": big.size}
    consistency = client.get("/v1/log/proof/consistency", params=params)
    merkle.verify_consistency(
        small.size, big.size, small.root, opened(client.get("/v1/log/checkpoint").text, vkey).root,
        [base64.b64decode(h) for h in consistency.json()["hashes"]],
    )  # fmt: skip
    tile = client.get("/v1/log/tile/0/001")
    assert tile.status_code == 200
    assert tile.content == stored_tiles(session)[(0, 1)]


def test_the_publisher_stores_its_checkpoint_in_the_process_turn_to_write(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    """On SQLite a background write outside the process's write turn waits in SQLite's
    busy handler, which under back-to-back appends can miss every gap for seconds; in the
    turn it queues behind the appends ahead of it, in order (PostgreSQL: no turn)."""
    url = new_database()
    context = build_context(make_settings(url, tmp_path))
    context.start()
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    publisher = context.publisher()
    publisher.start(loop)
    publisher.stop()  # its thread is not needed: publish_once is called here
    order: list[str] = []
    held = threading.Event()

    async def an_append() -> None:
        async with context.database.write_turn():
            held.set()
            await asyncio.sleep(0.3)
            order.append("the append ahead")

    try:
        with context.database.transaction() as session:
            append(context, session, [5])
        ahead = asyncio.run_coroutine_threadsafe(an_append(), loop)
        assert held.wait(5)
        row = publisher.publish_once()
        order.append("the checkpoint")
        ahead.result(5)
        assert row is not None
        with context.database.reader() as session:
            assert session.get(TreeCheckpoint, row.size) is not None
        expected = ["the append ahead", "the checkpoint"]
        if not context.database.sqlite:
            expected.reverse()  # nothing to queue behind
        assert order == expected
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
        context.dispose()


class FakeStop:
    """A stop event on a fake clock: each wait moves the clock on by its timeout; set
    after `rounds` waits."""

    def __init__(self, now: list[float], rounds: int) -> None:
        self.now, self.rounds, self.waits = now, rounds, list[float]()

    def wait(self, timeout: float) -> bool:
        self.waits.append(round(timeout, 6))
        self.now[0] += timeout
        return len(self.waits) > self.rounds


def test_publisher_and_submitter_rounds_start_an_interval_apart_however_long_one_takes(
    context: AppContext,
) -> None:
    """A round's own length (reading the new leaves, waiting for the turn to write, a slow
    witness) is taken from the next wait, not added to the period (and so to the lag)."""
    now = [0.0]

    class Publisher(transparency.Publisher):
        lengths = iter([0.4, 1.5, 0.1])

        def publish_once(self) -> TreeCheckpoint | None:
            now[0] += next(self.lengths)
            return None

    class Submitter(witnessing.Submitter):
        lengths = iter([0.4, 1.5, 0.1])

        def submit_once(self) -> bool:
            now[0] += next(self.lengths)
            return False

    away = Witness("oversight.example/w", Ed25519PrivateKey.generate(), Path("/nonexistent"), [])
    peer = witnessing.WitnessPeer.from_setting(
        WitnessSetting(url="http://127.0.0.1:9", vkey=away.vkey)
    )
    for worker in (
        Publisher(context.database, context.transparency, 1.0, monotonic=lambda: now[0]),
        Submitter(context.database, peer, interval=1.0, timeout=1.0, clock=context.clock,
                  monotonic=lambda: now[0]),
    ):  # fmt: skip
        stop = FakeStop(now, 3)
        worker._stop = stop  # type: ignore[assignment]
        worker._run()
        # 0.4 s round: 0.6 s left; a 1.5 s round: the next at once; 0.1 s: 0.9 s left.
        assert stop.waits == [1.0, 0.6, 0.0, 0.9]
