"""The Merkle tree library: RFC 6962 vectors, proofs built from tiles, tile paths."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from app.ledger import merkle
from app.ledger.merkle import ProofError

VECTORS = Path(__file__).parent / "vectors" / "rfc6962"


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert len(files) > 50
    return [pytest.param(path, id=str(path.relative_to(VECTORS))) for path in files]


def _b64(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


@pytest.mark.parametrize("path", _cases("inclusion"))
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        base64.b64decode(case["leafHash"] or ""), case["leafIdx"], case["treeSize"],
        _b64(case["proof"]), base64.b64decode(case["root"] or ""),
    )  # fmt: skip
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"))
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["size1"], case["size2"], base64.b64decode(case["root1"] or ""),
        base64.b64decode(case["root2"] or ""), _b64(case["proof"]),
    )  # fmt: skip
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_every_tree_extends_the_empty_one() -> None:
    # What a witness is sent for a log's first checkpoint (C2SP tlog-witness: old 0, no
    # proof); the reference code refuses it as meaningless, we accept exactly that.
    root = _mth([b"first"])
    merkle.verify_consistency(0, 1, merkle.EMPTY_ROOT, root, [])
    merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 1, root, root, [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 1, merkle.EMPTY_ROOT, root, [root])


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962's recursive definition, written as the RFC writes it (the independent count)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _hash_at(leaves: list[bytes]) -> merkle.HashAt:
    def hash_at(level: int, index: int) -> bytes:
        part = leaves[index << level : (index + 1) << level]
        assert len(part) == 1 << level, "asked for a subtree that is not complete"
        return _mth(part)

    return hash_at


def test_the_root_is_rfc_6962s_and_matches_the_reference_vector() -> None:
    # RFC 6962 2.1.3's worked tree: the inputs of transparency-dev/merkle's testdata.
    leaves = [bytes.fromhex(h) for h in
              ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
               "606162636465666768696a6b6c6d6e6f"]]  # fmt: skip
    root8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle.root_of(merkle.leaf_hash(d) for d in leaves).hex() == root8
    assert _mth(leaves).hex() == root8
    assert merkle.root_of([]) == merkle.EMPTY_ROOT
    for n in range(1, 70):
        data = [bytes([i % 251]) * (i % 7) for i in range(n)]
        assert merkle.root_of(merkle.leaf_hash(d) for d in data) == _mth(data)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 31, 37, 64])
def test_proofs_built_from_complete_subtrees_verify(size: int) -> None:
    leaves = [f"event {i}".encode() for i in range(size)]
    hash_at = _hash_at(leaves)
    for n in range(1, size + 1):
        root = _mth(leaves[:n])
        for index in range(n):
            proof = merkle.inclusion_proof(hash_at, index, n)
            merkle.verify_inclusion(merkle.leaf_hash(leaves[index]), index, n, proof, root)
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(hash_at, m, n)
            merkle.verify_consistency(m, n, _mth(leaves[:m]), root, proof)


def test_a_proof_for_another_leaf_or_root_does_not_verify() -> None:
    leaves = [f"event {i}".encode() for i in range(21)]
    hash_at = _hash_at(leaves)
    root = _mth(leaves)
    proof = merkle.inclusion_proof(hash_at, 6, 21)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(leaves[7]), 6, 21, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(leaves[6]), 6, 21, proof, _mth(leaves[:20]))
    consistency = merkle.consistency_proof(hash_at, 13, 21)
    forked = [*leaves[:12], b"rewritten", *leaves[13:]]
    with pytest.raises(ProofError):
        merkle.verify_consistency(13, 21, _mth(forked[:13]), root, consistency)
    with pytest.raises(ProofError):
        merkle.inclusion_proof(hash_at, 21, 21)
    with pytest.raises(ProofError):
        merkle.consistency_proof(hash_at, 22, 21)


@pytest.mark.parametrize("size", [1, 255, 256, 257, 511, 512, 70_000 // 64, 66_000])
def test_tiles_serve_every_proof(size: int) -> None:
    rng = random.Random(size)
    leaf_hashes = [hashlib.sha256(b"%d" % i).digest() for i in range(size)]
    tiles = merkle.tiles_of(leaf_hashes)
    reads: list[tuple[int, int]] = []

    def tile(level: int, index: int) -> bytes:
        reads.append((level, index))
        return tiles[(level, index)]

    hash_at = merkle.tile_hash_at(tile)
    root = merkle.root_of(leaf_hashes)
    for index in {0, size - 1, *(rng.randrange(size) for _ in range(5))}:
        reads.clear()
        proof = merkle.inclusion_proof(hash_at, index, size)
        merkle.verify_inclusion(leaf_hashes[index], index, size, proof, root)
        assert len(set(reads)) <= 2 * (merkle.TILE_HEIGHT + 1)  # a few tiles, not the log
    for old in {0, 1, size // 2, size - 1, size}:
        proof = merkle.consistency_proof(hash_at, old, size)
        merkle.verify_consistency(old, size, merkle.root_of(leaf_hashes[:old]), root, proof)


def test_tile_widths_and_counts_follow_c2sp() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial
    # level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width
    # 17, and one partial level 2 tile of width 1"
    tiles = merkle.tiles_of([bytes(32)] * 70_000)
    widths = {key: len(data) // merkle.HASH_SIZE for key, data in tiles.items()}
    assert sum(1 for (lv, _), w in widths.items() if lv == 0 and w == 256) == 273
    assert widths[(0, 273)] == 112
    assert widths[(1, 0)] == 256
    assert widths[(1, 1)] == 17
    assert widths[(2, 0)] == 1
    assert len(tiles) == 273 + 1 + 1 + 1 + 1
    for (level, index), width in widths.items():
        assert merkle.tile_width(70_000, level, index) == width
    assert merkle.tile_width(70_000, 0, 274) == 0
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    # tile of width 1"
    assert {k: len(v) // 32 for k, v in merkle.tiles_of([bytes(32)] * 256).items()} == {
        (0, 0): 256, (1, 0): 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 0, None, "tile/0/000"),
        (0, 1234067, None, "tile/0/x001/x234/067"),
        (2, 5, 17, "tile/2/005.p/17"),
        (None, 1000, None, "tile/entries/x001/000"),
        (None, 7, 255, "tile/entries/007.p/255"),
    ],
)
def test_tile_paths(level: int | None, index: int, width: int | None, path: str) -> None:
    assert merkle.tile_path(level, index, width) == path
    elements = path.split("/")[2:]
    assert merkle.parse_tile_index(elements) == (index, width)


@pytest.mark.parametrize(
    "elements",
    [["1234"], ["x001"], ["x1", "234"], ["12"], ["001.p", "0"], ["001.p", "256"],
     ["001.p", "07"], ["x000", "001"], [], ["abc"]],
)  # fmt: skip
def test_malformed_tile_paths_are_refused(elements: list[str]) -> None:
    with pytest.raises(ValueError, match=r"."):
        merkle.parse_tile_index(elements)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_growing_the_stored_tree_in_batches_gives_every_tile(seed: int) -> None:
    """Appends of random sizes (single events, batches across tile boundaries, a batch that
    completes a level-1 tile) store exactly the hashes of the tiles of the whole tree."""
    rng = random.Random(seed)
    leaves = [merkle.leaf_hash(f"event {i}".encode()) for i in range(256 * 256 + 300)]
    stored: dict[tuple[int, int], bytes] = {}
    asked: list[int] = []

    def read(level: int, start: int, end: int) -> list[bytes]:
        asked.append(end - start)
        return [stored[(level, p)] for p in range(start, end)]

    size = 0
    while size < len(leaves):
        n = min(rng.choice([1, 1, 3, 255, 256, 1000, 4000]), len(leaves) - size)
        for level, position, value in merkle.grow(size, leaves[size : size + n], read):
            assert (level, position) not in stored  # only ever inserted
            stored[(level, position)] = value
        size += n
    for (level, index), data in merkle.tiles_of(leaves).items():
        got = b"".join(
            stored[(level, p)]
            for p in range(index * 256, index * 256 + len(data) // merkle.HASH_SIZE)
        )
        assert got == data, (level, index)
    assert max(asked) < 256  # only the head of the first tile of a level is ever read


def test_growing_a_tree_that_lacks_hashes_is_refused() -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(256)]
    with pytest.raises(ProofError, match="lacks hashes"):
        merkle.grow(200, leaves[200:], lambda level, start, end: [])


def test_the_builder_of_a_whole_log_stores_what_the_appends_would() -> None:
    leaves = [merkle.leaf_hash(f"e{i}".encode()) for i in range(256 * 3 + 77)]
    builder = merkle.TreeBuilder()
    rows = [row for n in range(0, len(leaves), 100) for row in builder.add(leaves[n : n + 100])]
    assert sorted(rows) == sorted(merkle.grow(0, leaves, lambda level, start, end: []))
    assert builder.size == len(leaves)


@pytest.mark.parametrize("size", [1, 2, 7, 256, 1000])
def test_a_multi_proof_folds_every_chosen_leaf_to_the_root(size: int) -> None:
    rng = random.Random(size)
    leaves = [merkle.leaf_hash(f"e{i}".encode()) for i in range(size)]
    root = merkle.root_of(leaves)

    def hash_at(level: int, index: int) -> bytes:
        return merkle.root_of(leaves[index << level : (index + 1) << level])

    for count in (1, 3, size // 2 or 1, size):
        chosen = sorted(rng.sample(range(size), min(count, size)))
        nodes = merkle.multi_proof(hash_at, chosen, size)
        assert merkle.root_from_proof(size, {i: leaves[i] for i in chosen}, nodes) == root
        # Compact: each node once, never more than one path per leaf.
        assert len(nodes) <= len(chosen) * max(1, size.bit_length())
        if chosen != list(range(size)):
            forged = {i: leaves[i] for i in chosen}
            forged[chosen[0]] = merkle.leaf_hash(b"forged")
            assert merkle.root_from_proof(size, forged, nodes) != root
    with pytest.raises(ProofError):
        merkle.root_from_proof(size, {}, merkle.multi_proof(hash_at, [0], size)[1:])
