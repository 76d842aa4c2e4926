#!/usr/bin/env python3
"""The worked example of docs/integrity.md, computed with the service's own code.

Two events, their canonical bytes and hashes, a checkpoint signed with a throwaway key, the
CSV export of both and its signed manifest. Run it to print the example's values (the
document quotes them; tests/test_integrity_doc.py checks that they still agree), or with
`--write DIR` to write the example's files (CSV, manifest, public key) for a verifier.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.ledger.canonical import GENESIS_HASH, canonical_bytes, chain_hash
from app.ledger.export_format import CSV_COLUMNS, csv_row
from app.ledger.merkle import inclusion_proof, leaf_hash, node_hash
from app.ledger.note import Checkpoint, NoteSigner
from app.ledger.signing import Signer, checkpoint_message, manifest_message

# A throwaway key everyone can rebuild: its 32-byte private seed is the SHA-256 of this text.
SEED_TEXT = b"access-audit docs/integrity.md example key (never use it for anything)"
POLICY_VERSION = "sha256:" + hashlib.sha256(b"example policy").hexdigest()

EVENTS: list[dict[str, Any]] = [
    {
        "seq": 1,
        "event_id": "5f0c2a8e-8d5b-4c1e-9a77-0e3b6d1f4a21",
        "kind": "decision",
        "recorded_at": datetime(2025, 11, 3, 16, 0, 0, 250000, tzinfo=UTC),
        "occurred_at": datetime(2025, 11, 3, 16, 0, 0, 250000, tzinfo=UTC),
        "actor": "sgt.miller",
        "actor_roles": ["guard_clerk"],
        "action": "update_case",
        "action_category": "administrative",
        "record_type": "detainee_case",
        "record_id": "GRN-2025-00042",
        "facility": "greene",
        "purpose": "intake_processing",
        "justification": None,
        "break_glass": False,
        "decision": "allow",
        "reasons": [],
        "flags": [],
        "source": "cli_casemgmt",
        "client_event_id": "cms-7781",
        "policy_version": POLICY_VERSION,
        "workstation": "GRN-INTAKE-02",
        "source_ip": "10.20.0.15",
        "details": {},
    },
    {
        "seq": 2,
        "event_id": "c41d9e07-2b6a-4f3d-8e15-7a9b0c2d3e4f",
        "kind": "decision",
        "recorded_at": datetime(2025, 11, 4, 3, 12, 9, 0, tzinfo=UTC),
        "occurred_at": datetime(2025, 11, 4, 3, 12, 8, 999001, tzinfo=UTC),
        "actor": "spc.okafor",
        "actor_roles": ["guard_clerk"],
        "action": "transport_detainee",
        "action_category": "sworn",
        "record_type": "detainee_case",
        "record_id": "PHE-2025-00107",
        "facility": "phelps",
        "purpose": "transfer_scheduling",
        "justification": "-per Lt. Müller: van short a driver",
        "break_glass": None,
        "decision": "deny",
        "reasons": ["enforcement_action_forbidden", "facility_not_assigned"],
        "flags": ["after_hours"],
        "source": "cli_casemgmt",
        "client_event_id": None,
        "policy_version": POLICY_VERSION,
        "workstation": None,
        "source_ip": "10.20.0.15",
        "details": {
            "reasons": [
                {
                    "message": "Guard roles may not take sworn or enforcement actions",
                    "code": "enforcement_action_forbidden",
                }
            ]
        },
    },
]
SIGNED_AT = datetime(2025, 11, 4, 3, 15, 0, 0, tzinfo=UTC)
ORIGIN = "example.invalid/access-audit-docs"
EXPORT_ID = "0d7c3b52-61a4-4c89-b0f2-9e8d7c6b5a43"


def signer() -> Signer:
    seed = hashlib.sha256(SEED_TEXT).digest()
    return Signer.from_key(Ed25519PrivateKey.from_private_bytes(seed))


def example() -> dict[str, Any]:
    """Every value the document quotes, by name."""
    key = signer()
    values: dict[str, Any] = {"seed": hashlib.sha256(SEED_TEXT).hexdigest()}
    prev = GENESIS_HASH
    rows = []
    leaves = []
    for event in EVENTS:
        body = canonical_bytes(event)
        leaves.append(leaf_hash(body))
        values[f"leaf_{event['seq']}"] = leaves[-1].hex()
        digest = chain_hash(prev, body)
        rows.append({**event, "prev_hash": prev, "hash": digest})
        values[f"canonical_{event['seq']}"] = body.decode("utf-8")
        values[f"canonical_{event['seq']}_hex"] = body.hex()
        values[f"hash_{event['seq']}"] = digest
        prev = digest
    last = rows[-1]
    message = checkpoint_message(last["seq"], last["hash"], SIGNED_AT, key.key_id)
    checkpoint = {
        "seq": last["seq"],
        "hash": last["hash"],
        "signed_at": "2025-11-04T03:15:00.000000Z",
        "key_id": key.key_id,
        "signature": key.sign(message),
    }
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_row(row) for row in rows)
    csv_bytes = buffer.getvalue().encode("utf-8")
    manifest: dict[str, Any] = {
        "export_id": EXPORT_ID,
        "filters": {"record_type": "detainee_case"},
        "rows": len(rows),
        "sha256": hashlib.sha256(csv_bytes).hexdigest(),
        "first_seq": rows[0]["seq"],
        "last_seq": last["seq"],
        "checkpoint": checkpoint,
        "signed_at": "2025-11-04T03:16:30.000000Z",
        "key_id": key.key_id,
    }
    manifest_bytes = manifest_message(manifest)
    manifest["signature"] = key.sign(manifest_bytes)
    values.update(
        public_key_pem=key.public_key_pem,
        key_id=key.key_id,
        checkpoint_message=message.decode("ascii"),
        checkpoint_message_hex=message.hex(),
        checkpoint=checkpoint,
        csv=csv_bytes.decode("utf-8"),
        manifest_message=manifest_bytes.decode("utf-8"),
        manifest=manifest,
    )
    values.update(tree(key, leaves))
    return values


def tree(key: Signer, leaves: list[bytes]) -> dict[str, str]:
    """The tree of the two events: its root, a checkpoint note, the log's vkey, and event
    1's inclusion proof as a tlog-proof."""
    root = node_hash(leaves[0], leaves[1])
    note_key = NoteSigner(ORIGIN, key.private_key)
    text = Checkpoint(ORIGIN, len(leaves), root).text
    note = text + "\n" + note_key.signature_line(text)
    path = inclusion_proof(lambda level, index: leaves[index], 0, len(leaves))
    assert path == [leaves[1]]
    proof_lines = [
        "c2sp.org/tlog-proof@v1",
        "index 0",
        *(base64.b64encode(h).decode() for h in path),
    ]
    return {
        "root_hex": root.hex(),
        "checkpoint_note": note,
        "log_vkey": note_key.verifier.vkey,
        "tlog_proof_1": "\n".join(proof_lines) + "\n\n" + note,
    }


def write(folder: Path) -> None:
    """The example's files: events.csv, manifest.json, checkpoint.json, public-key.pem, and
    the tree's checkpoint.note, log.vkey and event-1.tlog-proof."""
    values = example()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.csv").write_bytes(values["csv"].encode("utf-8"))
    (folder / "manifest.json").write_text(json.dumps(values["manifest"], indent=2) + "\n")
    (folder / "checkpoint.json").write_text(json.dumps(values["checkpoint"], indent=2) + "\n")
    (folder / "public-key.pem").write_text(values["public_key_pem"])
    (folder / "checkpoint.note").write_text(values["checkpoint_note"])
    (folder / "log.vkey").write_text(values["log_vkey"] + "\n")
    (folder / "event-1.tlog-proof").write_text(values["tlog_proof_1"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, metavar="DIR", help="write the example's files")
    args = parser.parse_args()
    if args.write:
        write(args.write)
        print(f"wrote the example to {args.write}")
        return 0
    for name, value in example().items():
        text = json.dumps(value, indent=2) if isinstance(value, dict) else value
        print(f"--- {name}\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
