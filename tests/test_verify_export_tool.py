"""tools/verify_export.py, the outsider's verifier, on files the service really produced: the
signed CSV export with its manifest, and a JSON dump of events with a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.service import NewEvent
from app.migrate import ROOT

Headers = Callable[[str], dict[str, str]]
TOOL = ROOT / "tools" / "verify_export.py"


def run_tool(*args: Path | str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, check=False
    )
    return done.returncode, (done.stdout + done.stderr).strip()


@pytest.fixture
def auditor(as_role: Headers) -> dict[str, str]:
    return as_role("auditor")


@pytest.fixture
def public_key(client: TestClient, auditor: dict[str, str], tmp_path: Path) -> Path:
    path = tmp_path / "public-key.pem"
    path.write_text(client.get("/v1/integrity/public-key", headers=auditor).text)
    return path


@pytest.fixture
def wrong_key(tmp_path: Path) -> Path:
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = tmp_path / "wrong-key.pem"
    path.write_bytes(pem)
    return path


def append_interleaved(session: Session, context: AppContext) -> None:
    """Six events by two actors, alternating, with values the CSV form must protect."""
    events = [
        NewEvent(
            kind="decision",
            actor="dump.a" if i % 2 else "dump.b",
            actor_roles=["guard_clerk", "guard_logistics"] if i % 3 else [],
            action="update_case",
            record_type="detainee_case",
            record_id=f"-GRN-{i}" if i == 3 else f"GRN-{i}",
            justification='=HYPERLINK("x"), said Müller' if i == 1 else None,
            break_glass=bool(i % 2),
            decision="deny" if i % 2 else "allow",
            reasons=["facility_not_assigned", "training_expired"] if i % 2 else [],
            flags=["after_hours"] if i == 5 else [],
            workstation="@kiosk;\t2" if i == 5 else None,
            details={"z": [1, None, True], "a": {"y": "✓", "b": "\r\n"}, "n": i},
        )
        for i in range(6)
    ]
    context.ledger.append(session, context.clock(), events)
    session.flush()


def test_tool_does_not_use_the_services_code() -> None:
    source = TOOL.read_text()
    assert "from app" not in source
    assert "import app" not in source


def test_signed_csv_export_verifies_and_edits_do_not(
    client: TestClient,
    session: Session,
    context: AppContext,
    auditor: dict[str, str],
    public_key: Path,
    wrong_key: Path,
    tmp_path: Path,
) -> None:
    append_interleaved(session, context)
    response = client.get("/v1/exports/events.csv?actor=dump.a", headers=auditor)
    assert response.status_code == 200
    export_id = response.headers["x-export-id"]
    exported = tmp_path / "events.csv"
    exported.write_bytes(response.content)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(client.get(f"/v1/exports/{export_id}/manifest", headers=auditor).text)

    code, said = run_tool(exported, "--manifest", manifest, "--public-key", public_key)
    assert code == 0, said
    assert said.startswith("valid: 3 rows")
    assert "manifest signed by" in said
    assert "0 links checked" in said  # a filtered export: its rows are not consecutive

    # One character changed in one cell: that row's hash no longer recomputes.
    text = response.content.decode("utf-8")
    edited = tmp_path / "edited.csv"
    edited.write_text(text.replace("GRN-3", "GRN-8", 1), newline="")
    code, said = run_tool(edited, "--manifest", manifest, "--public-key", public_key)
    assert code == 1
    assert said.startswith("INVALID: hash mismatch at seq ")
    code, said = run_tool(edited)
    assert code == 1

    # The same edit with the row's hash recomputed: only the signed manifest catches it.
    row = next(line for line in text.split("\r\n") if "GRN-3" in line)
    forged_body = _forge(text, row.split(",")[0])
    forged = tmp_path / "forged.csv"
    forged.write_text(forged_body, newline="")
    assert run_tool(forged)[0] == 0  # self-consistent rows alone prove nothing
    code, said = run_tool(forged, "--manifest", manifest, "--public-key", public_key)
    assert (code, said) == (
        1,
        "INVALID: the file's SHA-256 is not the manifest's: the file was changed",
    )

    code, said = run_tool(exported, "--manifest", manifest, "--public-key", wrong_key)
    assert code == 1
    assert "no --public-key has that id" in said


def _forge(text: str, seq: str) -> str:
    """The CSV with row `seq` edited and its hash recomputed the documented way."""
    import csv
    import hashlib
    import io

    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    for cells in rows[1:]:
        if cells[0] == seq:
            cells[header.index("record_id")] = "GRN-8"
            values = {}
            for name, cell in zip(header, cells, strict=True):
                cell = cell.removeprefix("'")
                if name == "seq":
                    values[name] = int(cell)
                elif name in ("actor_roles", "reasons", "flags"):
                    values[name] = cell.split(";") if cell else []
                elif name == "details":
                    values[name] = json.loads(cell)
                elif name == "break_glass":
                    values[name] = {"": None, "true": True, "false": False}[cell]
                else:
                    values[name] = cell or None
            body = {k: values[k] for k in values if k not in ("prev_hash", "hash")}
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            digest = hashlib.sha256((values["prev_hash"] + canonical).encode()).hexdigest()
            cells[header.index("hash")] = digest
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    return out.getvalue()


def test_json_dump_verifies_against_a_checkpoint(
    client: TestClient,
    session: Session,
    context: AppContext,
    auditor: dict[str, str],
    public_key: Path,
    wrong_key: Path,
    tmp_path: Path,
) -> None:
    append_interleaved(session, context)
    checkpoint = client.post("/v1/integrity/checkpoints", headers=auditor).json()
    mine = sorted(
        (
            event
            for actor in ("dump.a", "dump.b")
            for event in client.get("/v1/events", params={"actor": actor}, headers=auditor).json()[
                "items"
            ]
        ),
        key=lambda event: event["seq"],
    )
    assert len(mine) == 6
    dump = tmp_path / "events.json"
    dump.write_text(json.dumps(mine))
    signed = tmp_path / "checkpoint.json"
    signed.write_text(json.dumps(checkpoint))
    keys = tmp_path / "keys.json"
    keys.write_text(client.get("/v1/integrity/public-keys", headers=auditor).text)

    for key in (public_key, keys):
        code, said = run_tool(dump, "--checkpoint", signed, "--public-key", key)
        assert code == 0, said
        assert "5 links checked" in said
        first = mine[0]["seq"]
        assert f"rows {first}..{checkpoint['seq']} are anchored to it" in said

    tampered = [dict(e) for e in mine]
    tampered[2]["purpose"] = "case_update"
    dump.write_text(json.dumps(tampered))
    code, said = run_tool(dump, "--checkpoint", signed, "--public-key", public_key)
    assert (code, said) == (1, f"INVALID: hash mismatch at seq {mine[2]['seq']}")

    dump.write_text(json.dumps(mine))
    assert run_tool(dump, "--checkpoint", signed, "--public-key", wrong_key)[0] == 1
    forged = {**checkpoint, "hash": mine[-2]["hash"], "seq": mine[-2]["seq"]}
    signed.write_text(json.dumps(forged))
    code, said = run_tool(dump, "--checkpoint", signed, "--public-key", public_key)
    assert (code, said) == (
        1,
        f"INVALID: checkpoint at seq {forged['seq']} has an invalid signature",
    )


def test_every_row_of_a_filtered_export_is_proven_offline_against_the_witnessed_tree(
    client: TestClient,
    auditor: dict[str, str],
    session: Session,
    context: AppContext,
    public_key: Path,
    tmp_path: Path,
) -> None:
    """A filtered export (one actor's rows, among others'), its manifest and proofs: the
    tool proves each row against the signed tree, with the log's vkey and a witness's."""
    import base64

    from app.ledger import transparency
    from app.ledger.models import TreeCosignature
    from app.ledger.note import COSIGNATURE_V1, NoteSigner

    append_interleaved(session, context)
    csv_response = client.get("/v1/exports/events.csv?actor=dump.a", headers=auditor)
    export_id = csv_response.headers["x-export-id"]
    manifest = client.get(f"/v1/exports/{export_id}/manifest", headers=auditor).json()
    # A witness cosigns that checkpoint (as `access-audit witness serve` would).
    witness = NoteSigner("oversight.example/w1", Ed25519PrivateKey.generate(), COSIGNATURE_V1)
    tree = transparency.covering_checkpoint(session, manifest["last_seq"])
    assert tree is not None
    text = tree.note.partition("\n\n")[0] + "\n"
    line = witness.signature_line(text, 1_764_800_000)
    session.add(TreeCosignature(size=tree.size, witness=witness.name, line=line,
                                received_at=context.clock()))  # fmt: skip
    session.flush()
    manifest = client.get(f"/v1/exports/{export_id}/manifest", headers=auditor).json()
    proofs = client.get(f"/v1/exports/{export_id}/proofs", headers=auditor).json()
    files = {"events.csv": csv_response.content, "manifest.json": json.dumps(manifest).encode(),
             "proofs.json": json.dumps(proofs).encode()}  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    log_vkey = client.get("/v1/log/key").text.strip()
    args = [tmp_path / "events.csv", "--manifest", tmp_path / "manifest.json",
            "--public-key", public_key, "--proofs", tmp_path / "proofs.json",
            "--log-vkey", log_vkey]  # fmt: skip
    code, said = run_tool(*args, "--witness-vkey", witness.verifier.vkey)
    assert code == 0, said
    assert "every row is in the tree of size" in said
    assert "cosigned by oversight.example/w1" in said

    other = NoteSigner("oversight.example/w2", Ed25519PrivateKey.generate(), COSIGNATURE_V1)
    code, said = run_tool(*args, "--witness-vkey", other.verifier.vkey)
    assert (code, said) == (1, "INVALID: the tree checkpoint has no cosignature of witness "
                                "oversight.example/w2")  # fmt: skip
    impostor = NoteSigner(log_vkey.split("+")[0], Ed25519PrivateKey.generate()).verifier.vkey
    assert run_tool(*args[:-1], impostor)[0] == 1
    # A proof that leaves a row out, or a node forged, does not fold to the signed root.
    for broken in (proofs["nodes"][1:], [{**proofs["nodes"][0], "hash": base64.b64encode(
            b"\0" * 32).decode()}, *proofs["nodes"][1:]]):  # fmt: skip
        (tmp_path / "proofs.json").write_text(json.dumps({**proofs, "nodes": broken}))
        code, said = run_tool(*args)
        assert code == 1, said
