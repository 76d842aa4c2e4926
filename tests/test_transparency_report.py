"""GET /v1/reports/transparency (contract 16): counts, suppression, signature, anchor, CSV."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import random
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.note import Verifier, open_note
from app.ledger.signing import manifest_message, verify_signature
from app.policy.book import Activation, PolicyBook
from app.policy.evaluator import CompiledPolicy
from app.reports.publication import COLUMNS, csv_body, table_relations, versions_in_force
from app.reports.suppression import derivable, primary, suppress
from tests.conftest import MovableClock, at, record_access

NOVEMBER = {"since": "2025-11-01", "until": "2025-11-30"}
Headers = dict[str, str]


@pytest.fixture
def month_of_events(session: Session, context: AppContext, clock: MovableClock) -> dict[str, int]:
    """November 2025 (America/Chicago) at three facilities, and events just outside it."""
    clock.set(at("2025-12-05T12:00:00-06:00"))
    seqs: dict[str, int] = {}

    def add(n: int, **fields: Any) -> None:
        for i in range(n):
            seq = record_access(
                session, context, occurred_at=at(f"2025-11-{(i % 27) + 2:02d}T10:00:00-06:00"),
                record_id=f"GRN-{i}", **fields,
            )  # fmt: skip
            seqs.setdefault("first", seq)
            seqs["last"] = seq

    add(30, facility="greene")
    add(12, facility="greene", flags=["break_glass"], break_glass=True,
        justification="urgent medical transfer paperwork")  # fmt: skip
    add(14, facility="greene", decision="deny", reasons=["facility_not_assigned"])
    add(13, facility="greene", action="arrest", decision="deny",
        reasons=["enforcement_action_forbidden"])  # fmt: skip
    add(25, facility="phelps")
    add(3, facility="phelps", decision="deny", reasons=["training_missing"])
    add(2, facility="made_up_jail", decision="deny", reasons=["unknown_facility"])
    # Facility-local boundaries: Oct 31 22:00 in Chicago is October; Nov 30 23:30 counts.
    record_access(session, context, occurred_at=at("2025-11-01T03:00:00Z"), facility="greene")
    seqs["last"] = record_access(
        session, context, occurred_at=at("2025-12-01T05:30:00Z"), facility="greene"
    )
    record_access(session, context, occurred_at=at("2025-12-01T06:30:00Z"), facility="greene")
    return seqs


def _expected(client: TestClient, headers: Headers, facility: str | None) -> dict[str, int]:
    """The row as the reports API gives it for November."""
    scope = {**NOVEMBER, **({"facility": facility} if facility else {})}
    summary = client.get("/v1/reports/summary", params=scope, headers=headers).json()
    glass = client.get(
        "/v1/reports/summary", params={**scope, "flag": "break_glass"}, headers=headers
    ).json()
    denials = client.get("/v1/reports/denials", params=scope, headers=headers).json()
    flags = client.get("/v1/reports/flags", params=scope, headers=headers).json()
    [group] = summary["groups"] or [{"count": 0, "denied": 0}]
    reasons = {f"denied_{r['reason']}": r["count"] for r in denials["by_reason"]}
    row = {
        "accesses": group["count"],
        "allowed": group["count"] - group["denied"],
        "denied": group["denied"],
        "break_glass": sum(g["count"] for g in glass["groups"]),
        "guard_sworn_enforcement_attempts": denials["mission_creep"]["attempts"],
        "flags_reviewed": flags["reviewed"],
        "flags_open": flags["open"],
    }
    return {c: row.get(c, reasons.get(c, 0)) for c in COLUMNS}


def _report(client: TestClient, headers: Headers, **params: str) -> dict[str, Any]:
    response = client.get(
        "/v1/reports/transparency", params={"month": "2025-11", **params}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _review(client: TestClient, headers: Headers, seq: int) -> None:
    response = client.post(
        f"/v1/events/{seq}/reviews", json={"disposition": "justified"}, headers=headers
    )
    assert response.status_code == 201, response.text


def test_published_counts_equal_the_reports_api_and_small_ones_are_suppressed(
    client: TestClient,
    as_role: Callable[[str], Headers],
    month_of_events: dict[str, int],
) -> None:
    oversight = as_role("oversight")
    # Review 11 of the 12 break-glass events: reviewed 11 is published, open 1 is not.
    first_glass = month_of_events["first"] + 30
    for seq in range(first_glass, first_glass + 11):
        _review(client, oversight, seq)
    report = _report(client, oversight)
    assert report["columns"] == list(COLUMNS)
    assert [(r["scope"], r["facility"]) for r in report["rows"]] == [
        ("facility", "greene"), ("facility", "phelps"), ("facility", "ste_genevieve"),
        ("elsewhere", None), ("all", None),
    ]  # fmt: skip
    assert report["rows"][0]["name"] == "Greene County Jail"
    expected = [_expected(client, oversight, f) for f in ("greene", "phelps", "ste_genevieve")]
    total = _expected(client, oversight, None)
    expected.append({c: total[c] - sum(row[c] for row in expected) for c in COLUMNS})
    expected.append(total)
    # The data, as the reports API counts it (boundary events included and excluded).
    assert expected[0]["accesses"] == 30 + 12 + 14 + 13 + 1  # Nov 30 in, Oct 31 out
    assert expected[0]["break_glass"] == 12
    assert expected[0]["flags_reviewed"] == 11
    assert expected[0]["guard_sworn_enforcement_attempts"] == 13
    assert expected[3]["denied_unknown_facility"] == 2
    hidden = set()
    for i, (row, want) in enumerate(zip(report["rows"], expected, strict=True)):
        assert list(row["cells"]) == list(COLUMNS)
        for column, value in row["cells"].items():
            if value is None:
                hidden.add((i, column))
            else:
                assert value == want[column], (row["facility"], column)
            if 1 <= want[column] <= 10:
                assert value is None, (row["facility"], column, want[column])
    # Suppression is visible and sound on the real table.
    assert (1, "denied") in hidden
    assert (0, "flags_open") in hidden
    assert len(hidden) > sum(1 for row in expected for v in row.values() if 1 <= v <= 10)
    assert derivable(table_relations(5), hidden) == []
    assert report["suppression"]["suppressed_cells"] == len(hidden)
    assert report["suppression"]["low"] == 1
    assert report["suppression"]["high"] == 10
    assert report["time_zone"] == "America/Chicago"
    assert report["since"] == "2025-11-01T05:00:00.000000Z"
    assert report["until"] == "2025-12-01T06:00:00.000000Z"
    assert report["complete"] is True
    assert report["first_seq"] == month_of_events["first"]
    assert report["last_seq"] == month_of_events["last"]


def test_the_signature_verifies_with_the_public_key_from_the_api(
    client: TestClient, as_role: Callable[[str], Headers], month_of_events: dict[str, int]
) -> None:
    oversight = as_role("oversight")
    report = _report(client, oversight)
    pem = client.get("/v1/integrity/public-key", headers=oversight).text
    keys = client.get("/v1/integrity/public-keys", headers=oversight).json()
    assert report["key_id"] in {key["key_id"] for key in keys}
    assert verify_signature(pem, manifest_message(report), report["signature"])
    tampered = {**report, "rows": [dict(report["rows"][0], name="Elsewhere"), *report["rows"][1:]]}
    assert not verify_signature(pem, manifest_message(tampered), report["signature"])


def test_the_checkpoint_covers_every_event_counted(
    client: TestClient, as_role: Callable[[str], Headers], month_of_events: dict[str, int]
) -> None:
    oversight = as_role("oversight")
    report = _report(client, oversight)
    vkey = client.get("/v1/log/key").text.strip()
    text, _ = open_note(report["checkpoint"], [Verifier.from_vkey(vkey)])
    size = int(text.splitlines()[1])
    assert size == report["tree_size"]
    assert size >= report["as_of_seq"] >= report["last_seq"] == month_of_events["last"]
    # The earliest such tree: a second report over the same log names the same checkpoint.
    assert _report(client, oversight)["checkpoint"] == report["checkpoint"]


def test_the_csv_is_the_json_table(
    client: TestClient, as_role: Callable[[str], Headers], month_of_events: dict[str, int]
) -> None:
    oversight = as_role("oversight")
    report = _report(client, oversight)
    response = client.get(
        "/v1/reports/transparency", params={"month": "2025-11", "format": "csv"}, headers=oversight
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["X-Report-SHA256"] == hashlib.sha256(response.content).hexdigest()
    assert response.headers["X-Report-SHA256"] == report["csv_sha256"]
    assert 'rel="describedby"' in response.headers["Link"]
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["scope", "facility", "name", *COLUMNS]
    for line, row in zip(table[1:], report["rows"], strict=True):
        assert line[:3] == [row["scope"], row["facility"] or "", row["name"]]
        cells = ["suppressed" if v is None else str(v) for v in row["cells"].values()]
        assert line[3:] == cells
    assert "suppressed" in response.text


def test_csv_cells_get_the_formula_guard() -> None:
    row = {"scope": "facility", "facility": "@x", "name": "=HYPERLINK(1)",
           "cells": dict.fromkeys(COLUMNS, 0)}  # fmt: skip
    [_, line] = list(csv.reader(io.StringIO(csv_body([row]).decode())))
    assert line[1:3] == ["'@x", "'=HYPERLINK(1)"]


def test_a_review_moves_a_flag_from_open_to_reviewed(
    client: TestClient, as_role: Callable[[str], Headers], month_of_events: dict[str, int]
) -> None:
    oversight = as_role("oversight")
    before = _report(client, oversight)
    assert before["rows"][4]["cells"]["flags_open"] == 12
    assert before["rows"][4]["cells"]["flags_reviewed"] == 0
    for seq in range(month_of_events["first"] + 30, month_of_events["first"] + 41):
        _review(client, oversight, seq)
    after = _report(client, oversight)
    cells = after["rows"][4]["cells"]
    assert cells["flags_reviewed"] == 11
    assert cells["flags_open"] is None
    # The reviews are counted, and the anchor moved on to cover them.
    assert after["as_of_seq"] >= before["as_of_seq"] + 11
    assert after["tree_size"] >= after["as_of_seq"]


@pytest.mark.parametrize(
    "month",
    ["2025-13", "2025-00", "2025-1", "25-11", "2025-11-01", "november", "0999-01", "2026-01"],
)
def test_a_bad_or_future_month_is_a_422_naming_it(
    client: TestClient, as_role: Callable[[str], Headers], clock: MovableClock, month: str
) -> None:
    clock.set(at("2025-12-05T12:00:00-06:00"))
    response = client.get(
        "/v1/reports/transparency", params={"month": month}, headers=as_role("oversight")
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "month"]


def test_the_running_month_is_served_and_marked_incomplete(
    client: TestClient, as_role: Callable[[str], Headers], clock: MovableClock
) -> None:
    clock.set(at("2025-12-05T12:00:00-06:00"))
    response = client.get(
        "/v1/reports/transparency", params={"month": "2025-12"}, headers=as_role("oversight")
    )
    assert response.status_code == 200
    assert response.json()["complete"] is False


def test_month_is_required_and_format_checked(
    client: TestClient, as_role: Callable[[str], Headers]
) -> None:
    oversight = as_role("oversight")
    missing = client.get("/v1/reports/transparency", headers=oversight)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["query", "month"]
    wrong = client.get(
        "/v1/reports/transparency", params={"month": "2025-11", "format": "xlsx"}, headers=oversight
    )
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["query", "format"]


@pytest.mark.parametrize("role", ["admin", "auditor", "integration"])
def test_only_oversight_reads_it(
    client: TestClient, as_role: Callable[[str], Headers], role: str
) -> None:
    response = client.get(
        "/v1/reports/transparency", params={"month": "2025-11"}, headers=as_role(role)
    )
    assert response.status_code == 403
    assert client.get("/v1/reports/transparency", params={"month": "2025-11"}).status_code == 401


@pytest.mark.parametrize("seed", range(20))
def test_random_tables_of_the_reports_shape_pass_the_checker(seed: int) -> None:
    rng = random.Random(seed)
    facilities = rng.randint(1, 5)
    rows = []
    for _ in range(facilities + 1):  # the facilities and `elsewhere`
        allowed, denied = (rng.choice([0, rng.randint(1, 10), rng.randint(11, 200)]) for _ in "ab")
        row = {"accesses": allowed + denied, "allowed": allowed, "denied": denied}
        row |= {c: rng.choice([0, rng.randint(1, 10), rng.randint(11, 90)]) for c in COLUMNS[3:]}
        rows.append(row)
    rows.append({c: sum(row[c] for row in rows) for c in COLUMNS})
    values = {(i, c): row[c] for i, row in enumerate(rows) for c in COLUMNS}
    relations = table_relations(len(rows))
    outcome = suppress(values, relations, order=list(values))
    assert outcome.suppressed >= primary(values)
    assert derivable(relations, outcome.suppressed) == []


def test_the_versions_in_force_are_those_that_judged_some_instant_of_the_month(
    policy: CompiledPolicy,
) -> None:
    book = PolicyBook(policy)
    assert versions_in_force(book, at("2025-11-01T05:00:00Z"), at("2025-12-01T06:00:00Z")) == [
        policy
    ]
    v2, v3 = (dataclasses.replace(policy, version=name) for name in ("v2", "v3"))

    def activation(seq: int, compiled: CompiledPolicy, effective_from: str) -> Activation:
        moment = at(effective_from)
        return Activation(seq, compiled.version, moment, moment, "test", None, None, compiled)

    book._timeline = (  # what a refresh reads from the log's policy events
        activation(1, policy, "2025-09-01T00:00:00Z"),
        activation(5, v2, "2025-11-15T06:00:00Z"),
        activation(6, v3, "2025-11-15T06:00:00Z"),  # same instant, later: v2 never judged
    )
    november = versions_in_force(book, at("2025-11-01T05:00:00Z"), at("2025-12-01T06:00:00Z"))
    assert [p.version for p in november] == [policy.version, "v3"]
    december = versions_in_force(book, at("2025-12-01T06:00:00Z"), at("2026-01-01T06:00:00Z"))
    assert [p.version for p in december] == ["v3"]
