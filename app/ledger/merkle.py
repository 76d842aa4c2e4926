"""The RFC 6962 / RFC 9162 Merkle tree: hashing, proofs, their verification, and C2SP tiles.

A leaf is an event's canonical bytes; leaf hash = SHA-256(0x00 || data), interior node =
SHA-256(0x01 || left || right); MTH of the empty tree is SHA-256(""). The tree of size n
over leaves D[0:n] splits at k, the largest power of two smaller than n (RFC 9162 §2.1.1).

Proofs are built from *complete* subtree hashes only: `hash_at(level, index)` is the hash
of the complete subtree of 2**level leaves that starts at leaf index * 2**level. Any node
a proof needs (the MTH of D[a:b] with a aligned to the split) is folded from the complete
subtrees that make up its range (`range_hash`), so a store of complete subtrees (C2SP
tiles: every 8th level, the levels between rebuilt from a tile's 256 hashes) serves every
proof of every tree size in a few reads.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) exactly.
A consistency proof from size 0 is empty and is accepted when the old root is the empty
tree's (the C2SP witness protocol sends `old 0` with an empty proof for a log's first
checkpoint: every tree extends the empty one); RFC 9162's reference code refuses it as
meaningless, and so does any other proof from 0 here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT  # 256 hashes a full tile

# The hash of the complete subtree (level, index): 2**level leaves from index * 2**level.
HashAt = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof that does not verify, or a request for one that cannot exist."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH of the leaves (given as their leaf hashes), in one pass with a stack of the
    complete subtrees so far (at most log2(n) hashes)."""
    stack: list[tuple[int, bytes]] = []  # (level, hash), levels strictly decreasing
    for value in leaf_hashes:
        level, node = 0, value
        while stack and stack[-1][0] == level:
            node = node_hash(stack.pop()[1], node)
            level += 1
        stack.append((level, node))
    if not stack:
        return EMPTY_ROOT
    node = stack.pop()[1]
    while stack:
        node = node_hash(stack.pop()[1], node)
    return node


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_hash(hash_at: HashAt, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for 0 <= start < end, start a multiple of the largest power of two
    not above end - start (which every node of a proof is): the complete subtrees that
    cover the range, left to right, folded from the right."""
    blocks: list[bytes] = []
    at = start
    while at < end:
        level = (end - at).bit_length() - 1
        while at % (1 << level):
            level -= 1
        blocks.append(hash_at(level, at >> level))
        at += 1 << level
    node = blocks.pop()
    while blocks:
        node = node_hash(blocks.pop(), node)
    return node


def inclusion_proof(hash_at: HashAt, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf to root."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end, at = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if at - start < k:
            path.append(range_hash(hash_at, start + k, end))
            end = start + k
        else:
            path.append(range_hash(hash_at, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(hash_at: HashAt, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[0:new]) (RFC 9162 §2.1.4.1); empty when old is 0 or equals new."""
    if not 0 <= old <= new:
        raise ProofError(f"no consistency proof from size {old} to size {new}")
    if old in (0, new):
        return []
    proof: list[bytes] = []
    # SUBPROOF(old - start, D[start:end], whole), unrolled from the top; `whole`: the old
    # tree is still the whole left part of the range (its root needs no proof node).
    start, end, whole = 0, new, True
    while old != end:
        k = _split(end - start)
        if old - start <= k:
            proof.append(range_hash(hash_at, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(hash_at, start, start + k))
            start += k
            whole = False
    if not whole:
        proof.append(range_hash(hash_at, start, end))
    proof.reverse()
    return proof


def _hashes(*values: bytes) -> None:
    if any(len(value) != HASH_SIZE for value in values):
        raise ProofError(f"a hash is {HASH_SIZE} bytes")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` proves leaf hash `leaf` at `index` in the tree of
    `size` with `root` (RFC 9162 §2.1.3.2)."""
    _hashes(leaf, root, *proof)
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("the proof leads to another root")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` proves the tree of size `old` with `old_root` is a
    prefix of the tree of size `new` with `new_root` (RFC 9162 §2.1.4.2)."""
    if not 0 <= old <= new:
        raise ProofError(f"size {old} is not a prefix of size {new}")
    if old == new:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("two different roots for one size")
        if old == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the empty tree has one root, SHA-256 of nothing")
        return
    _hashes(old_root, new_root, *proof)
    if old == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ProofError("the empty tree has one root, SHA-256 of nothing")
        return
    if not proof:
        raise ProofError("the proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the proof's first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is longer than the trees are deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the trees are deep")
    if fr != old_root:
        raise ProofError("the proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("the proof does not lead to the new root")


# --- C2SP tlog-tiles ------------------------------------------------------------------


def tile_path(level: int | None, index: int, width: int | None = None) -> str:
    """`tile/<L>/<N>[.p/<W>]`, or `tile/entries/<N>[.p/<W>]` for level None: N in 3-digit
    path elements, all but the last prefixed with `x`; W only for a partial tile."""
    if index < 0 or (width is not None and not 1 <= width < TILE_WIDTH):
        raise ValueError("no such tile")
    digits = f"{index:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    parts = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    n = "/".join([*(f"x{part}" for part in parts[:-1]), parts[-1]])
    suffix = "" if width is None else f".p/{width}"
    return f"tile/{'entries' if level is None else level}/{n}{suffix}"


def parse_tile_index(elements: Sequence[str]) -> tuple[int, int | None]:
    """The index and width (None: full) of a tile path's `<N>[.p/<W>]` elements, exactly as
    C2SP spells them (ValueError otherwise)."""
    parts = list(elements)
    width: int | None = None
    if len(parts) >= 2 and parts[-2].endswith(".p"):
        w = parts.pop()
        parts[-1] = parts[-1][:-2]
        if not w.isdigit() or w != str(int(w)) or not 1 <= int(w) < TILE_WIDTH:
            raise ValueError("the partial width must be 1-255 without leading zeroes")
        width = int(w)
    if not parts:
        raise ValueError("no tile index")
    for part in parts[:-1]:
        if len(part) != 4 or part[0] != "x" or not part[1:].isdigit():
            raise ValueError("every element but the last must be x and 3 digits")
    last = parts[-1]
    if len(last) != 3 or not last.isdigit():
        raise ValueError("the last element must be 3 digits")
    digits = "".join(part.lstrip("x") for part in parts)
    if len(parts) > 1 and parts[0] == "x000":
        raise ValueError("no leading zero elements")
    return int(digits), width


def tile_width(size: int, level: int, index: int) -> int:
    """How many hashes tile (level, index) holds in the tree of `size` (0: none yet)."""
    hashes = size >> (TILE_HEIGHT * level)  # complete subtrees of 256**level leaves
    return max(0, min(TILE_WIDTH, hashes - index * TILE_WIDTH))


def tile_hash_at(tile: Callable[[int, int], bytes]) -> HashAt:
    """A `HashAt` over stored tiles: `tile(l, n)` returns the hashes of tile l/n (a full
    tile, or the partial one the tree has). A complete subtree at a level between two tile
    levels is rebuilt from the tile below it: at most 128 hashes, one read."""

    def hash_at(level: int, index: int) -> bytes:
        tile_level, height = divmod(level, TILE_HEIGHT)
        # The subtree's leaves at the tile level: 2**height hashes, from index * 2**height.
        first = index << height
        n, offset = divmod(first, TILE_WIDTH)
        data = tile(tile_level, n)
        count = 1 << height
        hashes = [data[(offset + i) * HASH_SIZE : (offset + i + 1) * HASH_SIZE]
                  for i in range(count)]  # fmt: skip
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ProofError(f"tile {tile_level}/{n} does not hold subtree {level}/{index}")
        return root_of_complete(hashes)

    return hash_at


def root_of_complete(hashes: Sequence[bytes]) -> bytes:
    """The root over a power-of-two count of complete subtree hashes of one level."""
    nodes = list(hashes)
    while len(nodes) > 1:
        nodes = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
    return nodes[0]


def tiles_of(leaf_hashes: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """Every tile of the tree over `leaf_hashes` (full and partial), by (level, index): what
    a log stores, built at once (the append keeps it up to date incrementally)."""
    tiles: dict[tuple[int, int], bytes] = {}
    level, hashes = 0, list(leaf_hashes)
    while hashes:
        for n in range(0, len(hashes), TILE_WIDTH):
            tiles[(level, n // TILE_WIDTH)] = b"".join(hashes[n : n + TILE_WIDTH])
        hashes = [
            root_of_complete(hashes[n : n + TILE_WIDTH])
            for n in range(0, len(hashes) - TILE_WIDTH + 1, TILE_WIDTH)
        ]
        level += 1
    return tiles


# (tile_level, position, hash): a stored hash of the tree. Tile level 0 holds the leaf
# hashes; tile level L the hashes of the complete subtrees of 256**L leaves (one per full
# tile of level L - 1). Tile L/N is positions N*256 … N*256+255 of tile level L.
StoredHash = tuple[int, int, bytes]
# stored(tile_level, start, end): the stored hashes of positions start … end - 1.
StoredReader = Callable[[int, int, int], Sequence[bytes]]


def grow(size: int, leaves: Sequence[bytes], stored: StoredReader) -> list[StoredHash]:
    """The hashes to store when `leaves` (leaf hashes) are appended to the tree of `size`:
    the leaves themselves, and at each higher tile level one hash per tile that the append
    completes below it. Only the first tile of a level can hold hashes stored before:
    `stored` is asked for them (at most 255 a level, only when that tile completes)."""
    rows: list[StoredHash] = []
    level, first, new = 0, size, list(leaves)
    while new:
        rows.extend((level, first + i, value) for i, value in enumerate(new))
        end = first + len(new)
        tile = first // TILE_WIDTH
        parents: list[bytes] = []
        for n in range(tile, end // TILE_WIDTH):
            start = n * TILE_WIDTH
            if start < first:
                before = list(stored(level, start, first))
                if len(before) != first - start:
                    raise ProofError(f"the tree lacks hashes {start}-{first - 1} of level {level}")
                hashes = before + new[: start + TILE_WIDTH - first]
            else:
                hashes = new[start - first : start - first + TILE_WIDTH]
            parents.append(root_of_complete(hashes))
        level, first, new = level + 1, tile, parents
    return rows


class TreeBuilder:
    """The stored hashes of a tree built leaf by leaf from the first (a migration, a bulk
    load), holding only the tiles still being filled: `add` returns the rows to store."""

    def __init__(self) -> None:
        self.size = 0
        self._filling: dict[int, list[bytes]] = {}  # per level, its last tile's hashes

    def _stored(self, level: int, start: int, end: int) -> list[bytes]:
        return self._filling.get(level, [])[: end - start]

    def add(self, leaves: Sequence[bytes]) -> list[StoredHash]:
        rows = grow(self.size, leaves, self._stored)
        for level, position, value in rows:
            tile = self._filling.setdefault(level, [])
            if position % TILE_WIDTH == 0:
                tile.clear()
            tile.append(value)
        self.size += len(leaves)
        return rows


# --- proofs of many leaves at once (exports) -------------------------------------------

# A node of a multi-proof: the MTH of leaves [start, end), as RFC 9162 splits the tree.
ProofNode = tuple[int, int, bytes]


def multi_proof(hash_at: HashAt, indexes: Sequence[int], size: int) -> list[ProofNode]:
    """What proves the leaves at `indexes` (sorted, distinct) in the tree of `size`: the
    hash of every maximal subtree (as RFC 9162 splits the tree) that holds none of them,
    left to right, each node once. With the leaves themselves, `root_from_proof` folds
    them to the root."""
    if not indexes:
        raise ProofError("a proof of no leaves")
    if indexes[0] < 0 or indexes[-1] >= size:
        raise ProofError(f"a leaf is not in a tree of size {size}")
    nodes: list[ProofNode] = []

    def walk(start: int, end: int, lo: int, hi: int) -> None:
        # indexes[lo:hi] are the leaves inside [start, end)
        if lo == hi:
            nodes.append((start, end, range_hash(hash_at, start, end)))
            return
        if end - start == 1:
            return
        middle = start + _split(end - start)
        cut = lo
        while cut < hi and indexes[cut] < middle:
            cut += 1
        walk(start, middle, lo, cut)
        walk(middle, end, cut, hi)

    walk(0, size, 0, len(indexes))
    return nodes


def root_from_proof(size: int, leaves: dict[int, bytes], nodes: Sequence[ProofNode]) -> bytes:
    """The root that the leaf hashes `leaves` (by index) and a multi-proof's `nodes` fold
    to in the tree of `size`; ProofError if they do not make a whole tree."""
    given = {(start, end): value for start, end, value in nodes}
    if len(given) != len(nodes):
        raise ProofError("a node is given twice")
    used = 0

    def fold(start: int, end: int) -> bytes:
        nonlocal used
        value = given.get((start, end))
        if value is not None:
            if len(value) != HASH_SIZE:
                raise ProofError("a hash is 32 bytes")
            used += 1
            return value
        if end - start == 1:
            if start not in leaves:
                raise ProofError(f"neither leaf {start} nor a node over it is given")
            return leaves[start]
        middle = start + _split(end - start)
        return node_hash(fold(start, middle), fold(middle, end))

    root = fold(0, size) if size else EMPTY_ROOT
    if used != len(given):
        raise ProofError("the proof holds nodes the tree does not use")
    return root
