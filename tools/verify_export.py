#!/usr/bin/env python3
"""Verify an access-audit export offline, from docs/integrity.md alone.

Standard library plus `cryptography`; it does not use the service's code. Checks:

* every row's `hash` recomputes: SHA-256(prev_hash || canonical JSON of the row);
* consecutive seqs link: a row's `prev_hash` is the previous seq's `hash`;
* with `--manifest`: the file's SHA-256, row count and first/last seq are the manifest's,
  and the manifest's Ed25519 signature is valid;
* every checkpoint (the manifest's and `--checkpoint`'s): its Ed25519 signature is valid,
  and if the file holds its seq, that row's hash is the signed one;
* with `--proofs` (the JSON of `GET /v1/exports/{id}/proofs`) and `--log-vkey`: the tree
  checkpoint is a C2SP signed note that opens with the log's vkey (and each
  `--witness-vkey`'s cosignature verifies), it is the one the manifest names, and every
  row's leaf hash, folded with the proof's nodes, gives its root: each row of a filtered
  export is proven to be in the signed tree (docs/integrity.md §9).

Signatures are checked with the keys given by `--public-key` (a PEM file, or the JSON of
`GET /v1/integrity/public-keys`); a key's id is computed from the key itself.

    python tools/verify_export.py events.csv --manifest manifest.json --public-key key.pem
    python tools/verify_export.py events.json --checkpoint checkpoint.json --public-key key.pem
    python tools/verify_export.py events.csv --manifest manifest.json --public-key key.pem \
        --proofs proofs.json --log-vkey "$(cat log.vkey)" [--witness-vkey "$(cat w1.vkey)"]

Exit status: 0 valid, 1 invalid (one line says why), 2 unusable arguments or files.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import hashlib
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS_HASH = "0" * 64
HASHED_FIELDS = (
    "seq", "event_id", "kind", "recorded_at", "occurred_at", "actor", "actor_roles", "action",
    "action_category", "record_type", "record_id", "facility", "purpose", "justification",
    "break_glass", "decision", "reasons", "flags", "source", "client_event_id",
    "policy_version", "workstation", "source_ip", "details",
)  # fmt: skip
CSV_COLUMNS = (
    "seq", "event_id", "kind", "recorded_at", "occurred_at", "actor", "actor_roles", "action",
    "action_category", "record_type", "record_id", "facility", "purpose", "justification",
    "break_glass", "decision", "reasons", "flags", "source", "client_event_id",
    "policy_version", "prev_hash", "hash", "workstation", "source_ip", "details",
)  # fmt: skip
LIST_FIELDS = ("actor_roles", "reasons", "flags")
TIMESTAMP_FIELDS = ("recorded_at", "occurred_at")
CHECKPOINT_PREFIX = "access-audit checkpoint v1"


class Invalid(Exception):
    """The export does not verify; the message says why, in one line."""


class Unusable(Exception):
    """An argument or file cannot be used at all."""


# --- the documented encodings ------------------------------------------------------------------


def canonical(values: dict[str, Any]) -> bytes:
    """Canonical form: the hashed fields, sorted keys, no whitespace, UTF-8."""
    body = {name: values[name] for name in HASHED_FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def chain_hash(prev_hash: str, canonical_bytes: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_bytes).hexdigest()


def timestamp(text: str) -> str:
    """Any RFC 3339 time as the canonical `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {text!r}")
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def checkpoint_message(checkpoint: dict[str, Any]) -> bytes:
    seq, digest = checkpoint["seq"], checkpoint["hash"]
    signed_at, key_id = checkpoint["signed_at"], checkpoint["key_id"]
    return f"{CHECKPOINT_PREFIX}\n{seq}\n{digest}\n{signed_at}\n{key_id}\n".encode("ascii")


def manifest_message(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- the Merkle tree and signed notes (RFC 9162, C2SP signed-note, tlog-cosignature) ----------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_proof(
    size: int, leaves: dict[int, bytes], nodes: dict[tuple[int, int], bytes]
) -> bytes:
    """MTH(D[0:size]) from the given leaves (by index) and subtree hashes (by leaf range)."""
    used: set[tuple[int, int]] = set()

    def fold(start: int, end: int) -> bytes:
        if (start, end) in nodes:
            used.add((start, end))
            return nodes[(start, end)]
        if end - start == 1:
            if start not in leaves:
                raise Invalid(f"the proof leaves leaf {start} (seq {start + 1}) unaccounted for")
            return leaves[start]
        middle = start + split(end - start)
        return node_hash(fold(start, middle), fold(middle, end))

    root = fold(0, size) if size else hashlib.sha256(b"").digest()
    if used != set(nodes):
        raise Invalid("the proof holds nodes the tree does not use")
    return root


def parse_vkey(vkey: str) -> tuple[str, bytes, int, Ed25519PublicKey]:
    """(name, key id, type, key) of `<name>+<hex id>+base64(type || key)`."""
    name, hex_id, material = vkey.strip().split("+", 2)
    raw = base64.b64decode(material, validate=True)
    if len(raw) != 33 or raw[0] not in (0x01, 0x04):
        raise Unusable("only Ed25519 vkeys (types 0x01 and 0x04) are supported")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != hex_id:
        raise Unusable(f"the vkey of {name} has a key id that does not match its key")
    return name, key_id, raw[0], Ed25519PublicKey.from_public_bytes(raw[1:])


def open_checkpoint(
    note: str, log_vkey: str, witness_vkeys: list[str]
) -> tuple[str, int, bytes, list[str]]:
    """(origin, size, root, witnesses that cosigned) of a checkpoint note signed by the log's
    key; Invalid if the log's signature or a named witness's cosignature fails or is absent."""
    text, _, block = note.partition("\n\n")
    text += "\n"
    lines = [line for line in block.split("\n") if line]
    signatures: dict[tuple[str, bytes], bytes] = {}
    for line in lines:
        if not line.startswith("\u2014 "):
            raise Invalid("a signature line of the checkpoint does not start with an em dash")
        name, _, encoded = line[2:].partition(" ")
        raw = base64.b64decode(encoded, validate=True)
        signatures[(name, raw[:4])] = raw[4:]
    origin, key_id, _, key = parse_vkey(log_vkey)
    signature = signatures.get((origin, key_id))
    if signature is None:
        raise Invalid(f"the tree checkpoint is not signed by the log key {origin}")
    try:
        key.verify(signature, text.encode())
    except InvalidSignature:
        raise Invalid("the tree checkpoint's log signature does not verify") from None
    cosigned = []
    for vkey in witness_vkeys:
        name, wid, kind, wkey = parse_vkey(vkey)
        found = signatures.get((name, wid))
        if kind != 0x04 or found is None or len(found) != 72:
            raise Invalid(f"the tree checkpoint has no cosignature of witness {name}")
        stamp = int.from_bytes(found[:8], "big")
        message = f"cosignature/v1\ntime {stamp}\n{text}".encode()
        try:
            wkey.verify(found[8:], message)
        except InvalidSignature:
            raise Invalid(f"witness {name}'s cosignature does not verify") from None
        cosigned.append(name)
    body = text[:-1].split("\n")
    if len(body) < 3 or body[0] != origin:
        raise Invalid("the tree checkpoint is not of the log the vkey names")
    return origin, int(body[1]), base64.b64decode(body[2], validate=True), cosigned


def check_proofs(
    proofs: dict[str, Any],
    rows: list[dict[str, Any]],
    manifest: dict[str, Any] | None,
    log_vkey: str,
    witness_vkeys: list[str],
) -> str:
    note = proofs["checkpoint"]
    if manifest is not None and manifest.get("tree_checkpoint") != note:
        raise Invalid("the proofs are against another tree checkpoint than the manifest's")
    origin, size, root, cosigned = open_checkpoint(note, log_vkey, witness_vkeys)
    if size != proofs["tree_size"]:
        raise Invalid("the proofs' tree size is not the checkpoint's")
    if rows and rows[-1]["seq"] > size:
        raise Invalid(f"seq {rows[-1]['seq']} is not in the signed tree of size {size}")
    leaves = {row["seq"] - 1: leaf_hash(canonical(row)) for row in rows}
    nodes = {}
    for node in proofs["nodes"]:
        value = base64.b64decode(node["hash"], validate=True)
        if len(value) != 32 or (node["start"], node["end"]) in nodes:
            raise Invalid("a node of the proof is not one 32-byte hash")
        nodes[(node["start"], node["end"])] = value
    if root_from_proof(size, leaves, nodes) != root:
        raise Invalid("the rows and the proof do not fold to the signed root")
    witnessed = f", cosigned by {', '.join(cosigned)}" if cosigned else ""
    return f"every row is in the tree of size {size} signed by {origin}{witnessed}"


# --- reading the inputs --------------------------------------------------------------------------


def cell_value(name: str, text: str) -> Any:
    """A CSV cell back to the hashed value (docs/integrity.md, "The CSV form")."""
    if text.startswith("'"):
        text = text[1:]
    if name == "seq":
        return int(text)
    if name in LIST_FIELDS:
        return text.split(";") if text else []
    if name == "details":
        return json.loads(text) if text else {}
    if name == "break_glass":
        return {"": None, "true": True, "false": False}[text]
    return text or None


def rows_from_csv(data: bytes) -> list[dict[str, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the CSV is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(header) != CSV_COLUMNS:
        raise Invalid("the CSV header is not the documented column list")
    rows = []
    for number, cells in enumerate(reader, start=2):
        if len(cells) != len(CSV_COLUMNS):
            raise Invalid(f"CSV line {number} has {len(cells)} cells, not {len(CSV_COLUMNS)}")
        try:
            rows.append({n: cell_value(n, c) for n, c in zip(CSV_COLUMNS, cells, strict=True)})
        except (ValueError, KeyError) as exc:
            raise Invalid(f"CSV line {number} cannot be read: {exc}") from None
    return rows


def rows_from_json(data: bytes) -> list[dict[str, Any]]:
    """Events as the API returns them (a list, or a page with `items`)."""
    loaded = json.loads(data)
    events = loaded.get("items") if isinstance(loaded, dict) else loaded
    if not isinstance(events, list):
        raise Unusable("a JSON dump must be a list of events or a page with `items`")
    rows = []
    for event in events:
        try:
            row = {name: event[name] for name in (*HASHED_FIELDS, "prev_hash", "hash")}
            for name in TIMESTAMP_FIELDS:
                row[name] = timestamp(row[name])
            # The API shows reasons as {"code", "message"}; the log hashes the codes.
            row["reasons"] = [r["code"] if isinstance(r, dict) else r for r in row["reasons"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise Invalid(f"event {event.get('seq', '?')} cannot be read: {exc!r}") from None
        rows.append(row)
    return rows


def load_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """key_id → public key, from PEM files or `GET /v1/integrity/public-keys` JSON."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        text = path.read_text()
        if text.lstrip().startswith("-----BEGIN"):
            pems = [text]
        else:
            listed = json.loads(text)
            pems = [
                item["public_key_pem"]
                for item in (listed if isinstance(listed, list) else [listed])
            ]
        for pem in pems:
            key = serialization.load_pem_public_key(pem.encode("ascii"))
            if not isinstance(key, Ed25519PublicKey):
                raise Unusable(f"{path} holds a key that is not Ed25519")
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            keys[hashlib.sha256(raw).hexdigest()[:16]] = key
    return keys


def load_checkpoints(path: Path) -> list[dict[str, Any]]:
    """One checkpoint, or a list of them (as `GET /v1/integrity/checkpoints` returns)."""
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, list) else [loaded]


# --- the checks ----------------------------------------------------------------------------------


def check_signature(
    what: str, keys: dict[str, Ed25519PublicKey], key_id: str, message: bytes, signature: str
) -> None:
    key = keys.get(key_id)
    if key is None:
        raise Invalid(f"{what} is signed by key {key_id}, and no --public-key has that id")
    try:
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        raise Invalid(f"{what} has an invalid signature") from None


def check_rows(rows: list[dict[str, Any]]) -> tuple[int, dict[int, int]]:
    """Every hash recomputes, seqs increase, consecutive seqs link.

    Returns the number of links checked and, for each seq, the first seq of the contiguous
    run of linked rows that ends there.
    """
    links = 0
    run_start: dict[int, int] = {}
    previous: dict[str, Any] | None = None
    for row in rows:
        seq = row["seq"]
        try:
            recomputed = chain_hash(row["prev_hash"], canonical(row))
        except (UnicodeError, TypeError, ValueError):
            recomputed = None
        if recomputed != row["hash"]:
            raise Invalid(f"hash mismatch at seq {seq}")
        if previous is not None and seq <= previous["seq"]:
            raise Invalid(f"rows out of order: seq {seq} follows seq {previous['seq']}")
        if previous is not None and seq == previous["seq"] + 1:
            if row["prev_hash"] != previous["hash"]:
                raise Invalid(f"broken link at seq {seq}: prev_hash does not match seq {seq - 1}")
            links += 1
            run_start[seq] = run_start[previous["seq"]]
        elif seq == 1 and row["prev_hash"] != GENESIS_HASH:
            raise Invalid("broken link at seq 1: prev_hash is not the genesis hash")
        else:
            run_start[seq] = seq
        previous = row
    return links, run_start


def check_manifest(
    manifest: dict[str, Any], data: bytes, rows: list[dict[str, Any]], keys: dict[str, Any]
) -> None:
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise Invalid("the file's SHA-256 is not the manifest's: the file was changed")
    if manifest.get("rows") != len(rows):
        raise Invalid(f"the file has {len(rows)} rows, the manifest says {manifest.get('rows')}")
    first = rows[0]["seq"] if rows else None
    last = rows[-1]["seq"] if rows else None
    if (first, last) != (manifest.get("first_seq"), manifest.get("last_seq")):
        raise Invalid(f"the file's seqs run {first}..{last}, not the manifest's")
    check_signature(
        "the manifest",
        keys,
        str(manifest.get("key_id")),
        manifest_message(manifest),
        str(manifest.get("signature")),
    )


def verify(args: argparse.Namespace) -> str:
    """All the checks; returns the one-line summary of a valid export."""
    data = args.file.read_bytes()
    is_json = args.file.suffix.lower() == ".json" or data.lstrip()[:1] in (b"[", b"{")
    rows = rows_from_json(data) if is_json else rows_from_csv(data)
    keys = load_keys(args.public_key)
    links, run_start = check_rows(rows)
    said = [f"{len(rows)} rows" + (f" (seq {rows[0]['seq']}..{rows[-1]['seq']})" if rows else "")]
    said.append(f"every hash recomputes, {links} link{'' if links == 1 else 's'} checked")

    checkpoints = [] if args.checkpoint is None else load_checkpoints(args.checkpoint)
    if args.manifest is not None:
        manifest = json.loads(args.manifest.read_text())
        check_manifest(manifest, data, rows, keys)
        said.append(f"manifest signed by {manifest['key_id']} matches the file")
        if manifest.get("checkpoint"):
            checkpoints.append(manifest["checkpoint"])

    if args.proofs is not None:
        if not args.log_vkey:
            raise Unusable("--proofs needs --log-vkey (the log's vkey, from `log info`)")
        manifest_json = json.loads(args.manifest.read_text()) if args.manifest else None
        proofs = json.loads(args.proofs.read_text())
        said.append(check_proofs(proofs, rows, manifest_json, args.log_vkey, args.witness_vkey))

    by_seq = {row["seq"]: row for row in rows}
    for checkpoint in checkpoints:
        seq = checkpoint["seq"]
        what = f"checkpoint at seq {seq}"
        check_signature(
            what,
            keys,
            checkpoint["key_id"],
            checkpoint_message(checkpoint),
            checkpoint["signature"],
        )
        row = by_seq.get(seq)
        if row is None:
            said.append(f"{what} signed (its seq is not in the file)")
        elif row["hash"] != checkpoint["hash"]:
            raise Invalid(f"{what} does not match the row's hash")
        else:
            said.append(f"{what} signed; rows {run_start[seq]}..{seq} are anchored to it")
    return "valid: " + "; ".join(said)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("file", type=Path, help="an events CSV export or a JSON dump of events")
    parser.add_argument("--manifest", type=Path, help="the export's signed manifest (JSON)")
    parser.add_argument(
        "--checkpoint", type=Path, help="a checkpoint (or a list/page of them) as JSON"
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        help="a PEM public key, or the JSON of GET /v1/integrity/public-keys (repeatable)",
    )
    parser.add_argument("--proofs", type=Path, help="GET /v1/exports/{id}/proofs (JSON)")
    parser.add_argument("--log-vkey", help="the log's signed-note vkey (`access-audit log info`)")
    parser.add_argument(
        "--witness-vkey",
        action="append",
        default=[],
        help="a witness whose cosignature the tree checkpoint must carry (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        print(verify(args))
    except Invalid as exc:
        print(f"INVALID: {exc}")
        return 1
    except (Unusable, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
