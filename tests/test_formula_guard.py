"""CSV formula protection beyond the contract's list (=, +, -, @, tab, CR): a formula after
leading whitespace, and the fullwidth and small forms of the operators, which spreadsheets
run as well. The guard stays reversible: the export still verifies, with the service's
reader and with the outsider's tool."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.canonical import canonical_bytes, chain_hash
from app.ledger.export_format import parse_row, protect
from app.ledger.service import NewEvent
from tests.test_verify_export_tool import run_tool

Headers = Callable[[str], dict[str, str]]

# Each would run in a spreadsheet; each is written with one leading `'`.
DANGEROUS = [
    "=1+1",
    ' =HYPERLINK("http://x")',
    "   +1",
    "\u00a0-1",  # no-break space
    "\u3000@SUM(A1)",  # ideographic space
    "\u200b=1",  # zero-width space
    "\n=1",
    '\uff1dHYPERLINK("http://x")',  # fullwidth =
    "\uff0b1",  # fullwidth +
    "\uff0d1",  # fullwidth -
    "\uff20SUM(A1)",  # fullwidth @
    " \uff1d1",
    "\ufe661",  # small =
    "\tx",
    "\rx",
    "'already quoted",
]
HARMLESS = ["plain", "a=1", " plain", "GRN-1", "x\uff1d1", ""]


@pytest.mark.parametrize("text", DANGEROUS)
def test_formula_cells_get_one_leading_quote(text: str) -> None:
    assert protect(text) == "'" + text


@pytest.mark.parametrize("text", HARMLESS)
def test_other_cells_are_left_alone(text: str) -> None:
    assert protect(text) == text


def test_exported_cells_are_guarded_and_still_verify(
    client: TestClient,
    session: Session,
    context: AppContext,
    as_role: Headers,
    tmp_path: Path,
) -> None:
    auditor = as_role("auditor")
    dangerous = [text for text in DANGEROUS if "\n" not in text and "\r" not in text]
    events = [
        NewEvent(
            kind="admin",
            actor=text,
            action="guard_test",
            record_id=text or None,
            justification=text,
            workstation="WS-1",
        )
        for text in dangerous
    ]
    context.ledger.append(session, context.clock(), events)
    session.flush()
    response = client.get("/v1/exports/events.csv?action=guard_test", headers=auditor)
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert [row["actor"] for row in rows] == ["'" + text for text in dangerous]
    assert [row["justification"] for row in rows] == ["'" + text for text in dangerous]
    for row in rows:
        assert chain_hash(row["prev_hash"], canonical_bytes(parse_row(row))) == row["hash"]

    exported = tmp_path / "events.csv"
    exported.write_bytes(response.content)
    manifest = tmp_path / "manifest.json"
    export_id = response.headers["x-export-id"]
    manifest.write_text(client.get(f"/v1/exports/{export_id}/manifest", headers=auditor).text)
    key = tmp_path / "key.pem"
    key.write_text(client.get("/v1/integrity/public-key", headers=auditor).text)
    code, said = run_tool(exported, "--manifest", manifest, "--public-key", key)
    assert code == 0, said
    assert said.startswith(f"valid: {len(dangerous)} rows")


def test_a_login_username_cannot_smuggle_a_formula(client: TestClient, as_role: Headers) -> None:
    """The username of a failed login is logged as sent, and exported guarded."""
    auditor = as_role("auditor")
    for username in (" =cmd|' /C calc'!A0", "\uff1dcmd|' /C calc'!A0"):
        response = client.post(
            "/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": "wrong"},
        )
        assert response.status_code == 401
    response = client.get("/v1/exports/events.csv?kind=login", headers=auditor)
    assert response.status_code == 200
    actors = [
        row["actor"]
        for row in csv.DictReader(io.StringIO(response.content.decode("utf-8"), newline=""))
    ]
    assert "' =cmd|' /C calc'!A0" in actors
    assert "'\uff1dcmd|' /C calc'!A0" in actors
