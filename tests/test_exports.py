"""Exports (contract section 10): the streamed events CSV, its export event, the signed
manifest, the summary CSV, and `access-audit export` writing the same bytes."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.context import AppContext, build_context
from app.ledger.canonical import canonical_bytes, chain_hash
from app.ledger.export_format import CSV_COLUMNS, csv_row, parse_row
from app.ledger.models import Event
from app.ledger.signing import checkpoint_message, manifest_message, verify_signature
from app.main import create_app
from app.reports import exports
from app.reports.schemas import EventFilters
from tests.conftest import PASSWORD, at, make_settings, make_user, record_access, token

Headers = Callable[[str], dict[str, str]]


@pytest.fixture
def auditor(as_role: Headers) -> dict[str, str]:
    return as_role("auditor")


@pytest.fixture
def log(session: Session, context: AppContext) -> list[int]:
    t = at("2025-10-20T15:00:00+00:00")
    return [
        record_access(session, context, occurred_at=t),
        record_access(
            session,
            context,
            occurred_at=t,
            actor='=HYPERLINK("http://x")',
            roles=[],
            decision="deny",
            reasons=["unknown_actor"],
        ),
        record_access(
            session,
            context,
            occurred_at=t,
            action="arrest",
            decision="deny",
            reasons=["enforcement_action_forbidden"],
            flags=["after_hours"],
            facility="phelps",
            record_id="-1+1",
        ),
    ]


def _rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))


def _export_event(session: Session, export_id: str) -> Event:
    event = session.scalars(
        select(Event).where(Event.kind == "export", Event.record_id == export_id)
    ).one()
    return event


def test_events_csv_streams_every_matching_event(
    client: TestClient, auditor: dict[str, str], session: Session, log: list[int]
) -> None:
    response = client.get("/v1/exports/events.csv?kind=decision", headers=auditor)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    export_id = response.headers["x-export-id"]
    lines = response.content.decode().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    rows = _rows(response.content)
    assert [int(row["seq"]) for row in rows] == log
    # Formula-looking cells are defused, and every row still re-computes to its hash.
    assert rows[1]["actor"] == '\'=HYPERLINK("http://x")'
    assert rows[2]["record_id"] == "'-1+1"
    assert rows[2]["reasons"] == "enforcement_action_forbidden"
    assert rows[0]["actor_roles"] == "guard_clerk"
    for row in rows:
        assert chain_hash(row["prev_hash"], canonical_bytes(parse_row(row))) == row["hash"]

    event = _export_event(session, export_id)
    assert event.actor is not None
    assert event.actor.startswith("auditor.")
    assert event.action == "export_events"
    assert event.details == {
        "export_id": export_id,
        "format": "events.csv",
        "filters": {"kind": "decision"},
        "rows": 3,
        "sha256": hashlib.sha256(response.content).hexdigest(),
        "first_seq": log[0],
        "last_seq": log[-1],
        "completed": True,
    }


def test_export_bytes_are_the_reference_encoding(
    client: TestClient, auditor: dict[str, str], session: Session, context: AppContext
) -> None:
    """The export's fast path writes exactly what csv.writer writes for csv_row(event)."""
    from app.ledger.service import NewEvent

    hostile = [
        NewEvent(kind="admin", actor=f"{trigger}x", action=f"a{trigger}b", record_id=trigger)
        for trigger in ("=", "+", "-", "@", "\t", "\r", "'", ",", '"', "\n", "é")
    ]
    hostile += [
        NewEvent(
            kind="decision",
            actor="plain",
            actor_roles=["guard_clerk", "oversight"],
            reasons=["unknown_actor", "training_expired"],
            flags=["after_hours"],
            break_glass=True,
            justification='said "urgent", then left\r\nearly',
            details={"reasons": [{"code": "x", "message": 'ünï "q" ,;\n\t'}], "n": [1, None]},
        ),
        NewEvent(kind="decision", actor="roles", actor_roles=['q"uote', "ünï", "-lead"]),
        NewEvent(kind="decision", actor="comma", actor_roles=["a,b"], flags=["=x"]),
        NewEvent(kind="decision", actor="false", break_glass=False, details={"b": 1, "a": 2}),
        NewEvent(kind="review", actor="nested", details={"z": {"y": [{"b": "", "a": "\\"}]}}),
    ]
    appended = context.ledger.append(session, context.clock(), hostile)
    session.flush()
    response = client.get("/v1/exports/events.csv", headers=auditor)
    exported = int(_rows(response.content)[-1]["seq"])
    assert exported == appended[-1].seq
    events = session.scalars(select(Event).where(Event.seq <= exported).order_by(Event.seq))
    reference = io.StringIO()
    writer = csv.writer(reference)
    writer.writerow(CSV_COLUMNS)
    for event in events:
        writer.writerow(csv_row({name: getattr(event, name) for name in CSV_COLUMNS}))
    assert response.content.decode("utf-8") == reference.getvalue()


def test_export_filters_are_those_of_the_events_endpoint(
    client: TestClient, auditor: dict[str, str], session: Session, log: list[int]
) -> None:
    response = client.get(
        "/v1/exports/events.csv?decision=deny&facility=phelps&flag=after_hours&since=2025-10-20",
        headers=auditor,
    )
    assert [int(row["seq"]) for row in _rows(response.content)] == [log[2]]
    empty = client.get("/v1/exports/events.csv?actor=nobody", headers=auditor)
    assert empty.content.decode().splitlines() == [",".join(CSV_COLUMNS)]
    assert _export_event(session, empty.headers["x-export-id"]).details["rows"] == 0
    for query, name in (("kind=read", "kind"), ("since=2025-10-02&until=2025-10-01", "since")):
        bad = client.get(f"/v1/exports/events.csv?{query}", headers=auditor)
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["query", name]


def test_manifest_is_signed_and_proves_the_file(
    client: TestClient,
    auditor: dict[str, str],
    context: AppContext,
    log: list[int],
) -> None:
    response = client.get("/v1/exports/events.csv", headers=auditor)
    export_id = response.headers["x-export-id"]
    manifest = client.get(f"/v1/exports/{export_id}/manifest", headers=auditor).json()
    rows = _rows(response.content)
    assert list(manifest) == [
        "export_id", "filters", "rows", "sha256", "first_seq", "last_seq",
        "checkpoint", "tree_checkpoint", "signed_at", "key_id", "signature",
    ]  # fmt: skip
    assert manifest["export_id"] == export_id
    assert manifest["filters"] == {}
    assert manifest["rows"] == len(rows)
    assert manifest["sha256"] == hashlib.sha256(response.content).hexdigest()
    assert manifest["first_seq"] == int(rows[0]["seq"])
    assert manifest["last_seq"] == int(rows[-1]["seq"])
    public_key = context.ledger.signer.public_key_pem
    assert manifest["key_id"] == context.ledger.signer.key_id
    assert verify_signature(public_key, manifest_message(manifest), manifest["signature"])
    checkpoint = manifest["checkpoint"]
    assert checkpoint["seq"] >= manifest["last_seq"]
    message = checkpoint_message(
        checkpoint["seq"], checkpoint["hash"], checkpoint["signed_at"], checkpoint["key_id"]
    )
    assert verify_signature(public_key, message, checkpoint["signature"])
    # The whole log was exported up to its head: the head was signed as the export ended.
    assert checkpoint["seq"] == manifest["last_seq"]
    assert checkpoint["hash"] == rows[-1]["hash"]
    # Any change to what the manifest states breaks its signature.
    for field, value in (("rows", manifest["rows"] + 1), ("sha256", "0" * 64)):
        assert not verify_signature(
            public_key, manifest_message({**manifest, field: value}), manifest["signature"]
        )
    # Asked again, the manifest names the same checkpoint.
    again = client.get(f"/v1/exports/{export_id}/manifest", headers=auditor).json()
    assert again["checkpoint"] == checkpoint


def test_manifest_of_an_unknown_or_incomplete_export(
    client: TestClient,
    auditor: dict[str, str],
    session: Session,
    context: AppContext,
    log: list[int],
) -> None:
    assert client.get("/v1/exports/nope/manifest", headers=auditor).status_code == 404

    export = context.exports.events(
        EventFilters(), exports.Exporter("auditor.x", ["auditor"], "auditor.x")
    )
    assert export.next_chunk() is not None  # the header, then the client goes away
    export.abandon()
    export.abandon()  # idempotent
    details = _export_event(session, export.export_id).details
    assert details["completed"] is False
    assert details["rows"] == 0
    response = client.get(f"/v1/exports/{export.export_id}/manifest", headers=auditor)
    assert response.status_code == 409


def test_summary_csv(
    client: TestClient, auditor: dict[str, str], session: Session, log: list[int]
) -> None:
    query = "group_by=facility&group_by=decision"
    response = client.get(f"/v1/exports/summary.csv?{query}", headers=auditor)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    report = client.get(f"/v1/reports/summary?{query}", headers=auditor).json()
    rows = _rows(response.content)
    assert list(rows[0]) == ["facility", "decision", "count", "denied", "flagged"]
    assert [
        {**g["key"], "count": str(g["count"]), "denied": str(g["denied"]),
         "flagged": str(g["flagged"])}
        for g in report["groups"]
    ] == rows  # fmt: skip
    export_id = response.headers["x-export-id"]
    details = _export_event(session, export_id).details
    assert details["format"] == "summary.csv"
    assert details["filters"] == {"group_by": ["facility", "decision"]}
    assert details["rows"] == len(rows)
    assert details["sha256"] == hashlib.sha256(response.content).hexdigest()
    manifest = client.get(f"/v1/exports/{export_id}/manifest", headers=auditor).json()
    assert manifest["sha256"] == details["sha256"]
    assert manifest["last_seq"] is None


def test_cli_export_writes_the_same_csv_as_the_api(
    new_database: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app import cli

    settings = make_settings(new_database(), tmp_path)
    context = build_context(settings)
    with context.database.transaction() as session:
        make_user(session, context, "auditor.cli", ["auditor"])
        for i in range(5):
            record_access(
                session,
                context,
                occurred_at=at("2025-10-20T15:00:00+00:00"),
                facility="greene" if i % 2 else "phelps",
            )
    for name, value in (
        ("AUDIT_DATABASE_URL", settings.database_url),
        ("AUDIT_POLICY_DIR", str(settings.policy_dir)),
        ("AUDIT_SECRET_KEY", str(settings.secret_key)),
        ("AUDIT_SIGNING_KEY_FILE", str(settings.signing_key_file)),
    ):
        monkeypatch.setenv(name, value)
    out = tmp_path / "events.csv"
    manifest_path = tmp_path / "manifest.json"
    args = ["export", "--out", str(out), "--facility", "phelps", "--manifest", str(manifest_path)]
    assert cli.main(args) == 0
    written = out.read_bytes()
    captured = capsys.readouterr()
    assert "3 rows written" in captured.out
    assert [row["facility"] for row in _rows(written)] == ["phelps"] * 3
    with context.database.reader() as session:
        event = session.scalars(select(Event).where(Event.kind == "export")).one()
    assert event.source == "cli"
    assert event.details["sha256"] == hashlib.sha256(written).hexdigest()
    assert event.details["filters"] == {"facility": "phelps"}
    assert event.details["export_id"] in captured.out
    assert event.details["sha256"] in manifest_path.read_text()

    with TestClient(create_app(context=context)) as api:
        headers = token(api, "auditor.cli", PASSWORD)
        response = api.get("/v1/exports/events.csv?facility=phelps", headers=headers)
    assert response.content == written
    assert cli.main(["export", "--out", str(out), "--decision", "maybe"]) == 2
    assert "--decision" in capsys.readouterr().err
    context.dispose()


def test_every_row_of_a_filtered_export_is_proven_against_the_signed_tree(
    client: TestClient,
    auditor: dict[str, str],
    session: Session,
    context: AppContext,
    log: list[int],
) -> None:
    import base64

    from app.ledger import merkle, repository
    from app.ledger.note import Checkpoint, Verifier, open_note

    for _ in range(40):  # rows the filter leaves out, around the ones it keeps
        record_access(session, context, occurred_at=at("2025-10-20T16:00:00+00:00"))
    response = client.get("/v1/exports/events.csv?decision=deny", headers=auditor)
    export_id = response.headers["x-export-id"]
    seqs = [int(row["seq"]) for row in _rows(response.content)]
    assert seqs == [log[1], log[2]]
    manifest = client.get(f"/v1/exports/{export_id}/manifest", headers=auditor).json()
    proofs = client.get(f"/v1/exports/{export_id}/proofs", headers=auditor)
    assert proofs.status_code == 200, proofs.text
    body = proofs.json()
    assert body["checkpoint"] == manifest["tree_checkpoint"]
    assert body["leaves"] == len(seqs)
    vkey = client.get("/v1/log/key").text.strip()
    text, _ = open_note(body["checkpoint"], [Verifier.from_vkey(vkey)])
    signed = Checkpoint.parse(text)
    assert signed.size == body["tree_size"] >= seqs[-1]
    forms = dict(repository.canonical_forms(session, 1, signed.size))
    leaves = {seq - 1: merkle.leaf_hash(forms[seq]) for seq in seqs}
    nodes = [(n["start"], n["end"], base64.b64decode(n["hash"])) for n in body["nodes"]]
    assert merkle.root_from_proof(signed.size, leaves, nodes) == signed.root
    assert len(nodes) < 2 * len(seqs) * signed.size.bit_length()  # not the whole log
    summary = client.get("/v1/exports/summary.csv", headers=auditor).headers["x-export-id"]
    assert client.get(f"/v1/exports/{summary}/proofs", headers=auditor).status_code == 409
    assert client.get("/v1/exports/nothing/proofs", headers=auditor).status_code == 404
