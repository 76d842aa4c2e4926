"""Reading the log (contract section 7): filters, cursors, one event, the accounting of
disclosures, and that reading appends nothing."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.export_format import CSV_COLUMNS
from app.ledger.models import Event
from tests.conftest import at, record_access

Headers = Callable[[str], dict[str, str]]


@pytest.fixture
def reader(as_role: Headers) -> dict[str, str]:
    return as_role("oversight")


@pytest.fixture
def log(session: Session, context: AppContext) -> dict[str, int]:
    """A small, varied log of access events; name -> seq."""
    return {
        "read": record_access(session, context, occurred_at=at("2025-10-06T15:00:00+00:00")),
        "update": record_access(
            session,
            context,
            occurred_at=at("2025-10-07T15:00:00+00:00"),
            action="update_case",
            purpose="case_update",
        ),
        "arrest": record_access(
            session,
            context,
            occurred_at=at("2025-10-08T03:00:00+00:00"),
            action="arrest",
            decision="deny",
            reasons=["enforcement_action_forbidden", "action_not_permitted_for_role"],
            flags=["after_hours"],
        ),
        "other_record": record_access(
            session,
            context,
            occurred_at=at("2025-10-09T15:00:00+00:00"),
            actor="spc.jones",
            roles=["guard_logistics"],
            record_id="PHE-2025-00007",
            facility="phelps",
            kind="report",
        ),
        "glass": record_access(
            session,
            context,
            occurred_at=at("2025-11-03T15:00:00+00:00"),
            actor="sup.ortiz",
            roles=["guard_supervisor"],
            facility="phelps",
            justification="covering the Phelps intake desk today",
            break_glass=True,
            flags=["break_glass"],
        ),
    }


def _seqs(client: TestClient, headers: dict[str, str], query: str) -> list[int]:
    response = client.get(f"/v1/events?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [item["seq"] for item in response.json()["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=sgt.miller", ["read", "update", "arrest"]),
        ("action=update_case", ["update"]),
        ("category=enforcement", ["arrest"]),
        ("facility=phelps", ["other_record", "glass"]),
        ("record_type=detainee_case&record_id=PHE-2025-00007", ["other_record"]),
        ("decision=deny", ["arrest"]),
        ("purpose=case_update", ["update"]),
        ("kind=report", ["other_record"]),
        ("flag=break_glass", ["glass"]),
        ("flag=after_hours", ["arrest"]),
        ("since=2025-10-07T15:00:00Z&until=2025-10-09T15:00:00Z", ["update", "arrest"]),
        ("actor=sgt.miller&decision=allow&since=2025-10-07T00:00:00Z", ["update"]),
        ("facility=phelps&kind=decision&flag=break_glass", ["glass"]),
        ("actor=nobody", []),
    ],
)
def test_every_filter_and_combinations(
    client: TestClient, reader: dict[str, str], log: dict[str, int], query: str, expected: list[str]
) -> None:
    # Only the access events of this test: other events (logins, user creation) are admin/login.
    seqs = _seqs(client, reader, f"{query}&limit=1000")
    access = set(log.values())
    assert [s for s in seqs if s in access] == [log[name] for name in expected]
    if "kind" in query or "actor" in query or "record_id" in query or "category" in query:
        assert set(seqs) <= access


def test_since_and_until_dates_are_facility_local_days(
    client: TestClient, reader: dict[str, str], log: dict[str, int]
) -> None:
    # The arrest attempt at 03:00Z on Oct 8 was 22:00 on Oct 7 in Chicago.
    seqs = _seqs(client, reader, "since=2025-10-07&until=2025-10-07&kind=decision")
    assert seqs == [log["update"], log["arrest"]]


def test_pages_follow_the_cursor_to_the_end(
    client: TestClient, reader: dict[str, str], log: dict[str, int]
) -> None:
    seen: list[int] = []
    url = "/v1/events?kind=decision&limit=2"
    while True:
        body = client.get(url, headers=reader).json()
        assert len(body["items"]) <= 2
        seen += [item["seq"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        url = f"/v1/events?kind=decision&limit=2&cursor={body['next_cursor']}"
    assert seen == sorted(seen)
    assert seen == [log[n] for n in ("read", "update", "arrest", "glass")]


def test_cursor_is_opaque_and_checked(
    client: TestClient, reader: dict[str, str], log: dict[str, int]
) -> None:
    cursor = client.get("/v1/events?kind=decision&limit=1", headers=reader).json()["next_cursor"]
    assert cursor
    assert str(log["read"]) not in cursor.split(".")[1]
    payload, mac = cursor.split(".")
    forged = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(payload + "==").replace(b'"k":', b'"k":1')
    )
    for bad in ("garbage", "a.b", forged.decode().rstrip("=") + "." + mac, cursor[:-2] + "AA"):
        response = client.get(f"/v1/events?kind=decision&cursor={bad}", headers=reader)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    # A cursor belongs to its query: changing the filters mid-way is refused, not misread.
    response = client.get(f"/v1/events?kind=report&cursor={cursor}", headers=reader)
    assert response.status_code == 422
    assert "different query" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("decision=maybe", "decision"),
        ("kind=read", "kind"),
        ("flag=suspicious", "flag"),
        ("since=yesterday", "since"),
        ("until=2025-13-01", "until"),
        ("since=2025-10-01T10:00:00", "since"),  # no offset
        ("since=2025-10-02T00:00:00Z&until=2025-10-01T00:00:00Z", "since"),
        ("since=2025-10-02&until=2025-10-01", "since"),
        ("acter=sgt.miller", "acter"),  # a misspelt filter must not return everything
    ],
)
def test_bad_parameters_are_422_naming_them(
    client: TestClient, reader: dict[str, str], query: str, name: str
) -> None:
    response = client.get(f"/v1/events?{query}", headers=reader)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["query", name]


def test_one_event_with_every_field_in_contract_order(
    client: TestClient, reader: dict[str, str], log: dict[str, int]
) -> None:
    response = client.get(f"/v1/events/{log['arrest']}", headers=reader)
    assert response.status_code == 200
    body = response.json()
    assert tuple(body) == CSV_COLUMNS
    assert body["kind"] == "decision"
    assert body["decision"] == "deny"
    assert body["action_category"] == "enforcement"
    assert body["reasons"] == [
        {"code": "enforcement_action_forbidden", "message": "why: enforcement_action_forbidden"},
        {"code": "action_not_permitted_for_role", "message": "why: action_not_permitted_for_role"},
    ]
    assert body["flags"] == ["after_hours"]
    assert body["occurred_at"].startswith("2025-10-08T03:00:00")
    assert len(body["hash"]) == 64
    assert len(body["prev_hash"]) == 64
    page = client.get("/v1/events?decision=deny&category=enforcement", headers=reader).json()
    assert page["items"] == [body]


def test_reason_message_falls_back_to_the_code(
    client: TestClient, reader: dict[str, str], session: Session, context: AppContext
) -> None:
    from app.ledger.service import NewEvent

    [appended] = context.ledger.append(
        session,
        context.clock(),
        [NewEvent(kind="decision", actor="x", decision="deny", reasons=["unknown_actor"])],
    )
    session.flush()
    body = client.get(f"/v1/events/{appended.seq}", headers=reader).json()
    assert body["reasons"] == [{"code": "unknown_actor", "message": "unknown_actor"}]


def test_unknown_event_is_404(client: TestClient, reader: dict[str, str]) -> None:
    response = client.get("/v1/events/999999999", headers=reader)
    assert response.status_code == 404
    assert client.get("/v1/events/0", headers=reader).status_code == 422


def test_accounting_of_disclosures(
    client: TestClient,
    reader: dict[str, str],
    log: dict[str, int],
    session: Session,
    context: AppContext,
) -> None:
    from app.ledger.service import NewEvent

    # An admin event about a record of the same name is not an access to it.
    context.ledger.append(
        session,
        context.clock(),
        [NewEvent(kind="admin", record_type="detainee_case", record_id="GRN-2025-00042")],
    )
    session.flush()
    url = "/v1/records/detainee_case/GRN-2025-00042/accesses"
    body = client.get(url, headers=reader).json()
    assert body["record_type"] == "detainee_case"
    assert body["record_id"] == "GRN-2025-00042"
    assert [item["seq"] for item in body["items"]] == [
        log["read"],
        log["update"],
        log["arrest"],
        log["glass"],
    ]
    arrest = body["items"][2]
    assert arrest["actor"] == "sgt.miller"
    assert arrest["actor_roles"] == ["guard_clerk"]
    assert arrest["action"] == "arrest"
    assert arrest["purpose"] == "records_request"
    assert arrest["decision"] == "deny"
    assert arrest["reasons"][0]["code"] == "enforcement_action_forbidden"
    glass = body["items"][3]
    assert glass["break_glass"] is True
    assert glass["justification"] == "covering the Phelps intake desk today"
    paged = client.get(f"{url}?limit=3", headers=reader).json()
    assert len(paged["items"]) == 3
    rest = client.get(f"{url}?limit=3&cursor={paged['next_cursor']}", headers=reader).json()
    assert [item["seq"] for item in rest["items"]] == [log["glass"]]
    assert rest["next_cursor"] is None
    since = client.get(f"{url}?since=2025-10-08", headers=reader).json()
    assert [item["seq"] for item in since["items"]] == [log["glass"]]
    # A cursor of one record's accounting is not valid for another's.
    other = "/v1/records/detainee_case/PHE-2025-00007/accesses"
    response = client.get(f"{other}?limit=3&cursor={paged['next_cursor']}", headers=reader)
    assert response.status_code == 422


def test_reading_appends_nothing(
    client: TestClient, reader: dict[str, str], log: dict[str, int], session: Session
) -> None:
    before = session.scalar(select(func.count()).select_from(Event))
    client.get("/v1/events", headers=reader)
    client.get(f"/v1/events/{log['read']}", headers=reader)
    client.get("/v1/records/detainee_case/GRN-2025-00042/accesses", headers=reader)
    client.get("/v1/reports/summary?group_by=facility", headers=reader)
    client.get("/v1/reports/denials", headers=reader)
    client.get("/v1/reports/flags", headers=reader)
    assert session.scalar(select(func.count()).select_from(Event)) == before
