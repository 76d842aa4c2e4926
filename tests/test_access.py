"""POST /v1/decisions and POST /v1/events through HTTP (contract section 5)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.access.schemas import DecisionRequest
from app.access.service import Ask
from app.auth.principal import Principal
from app.context import AppContext
from app.ledger.models import Event
from app.ledger.service import LockedAppend
from app.users.schemas import ClientCreate
from tests.conftest import (
    NOV_3_MORNING,
    MovableClock,
    at,
    decision,
    make_actor,
    make_user,
    token,
)


def report(i: int, occurred: str = "2025-11-03T10:00:00-06:00", **overrides: Any) -> dict[str, Any]:
    return {**decision(**overrides), "occurred_at": occurred, "client_event_id": f"evt-{i}"}


def event_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Event)) or 0


@pytest.fixture
def mission(session: Session, context: AppContext, clock: MovableClock) -> AppContext:
    """Actors of every kind, and the clock on a weekday morning of the mission."""
    make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"])
    make_actor(session, context, "spc.ortiz", ["guard_logistics"], ["phelps"])
    make_actor(session, context, "lt.hayes", ["guard_supervisor"], ["greene"])
    make_actor(
        session, context, "officer.reyes", ["ice_officer"], [], volunteer=False, trained_on=None
    )
    clock.set(NOV_3_MORNING)
    return context


def test_allowed_decision(
    client: TestClient, integration: dict[str, str], mission: AppContext, session: Session
) -> None:
    response = client.post(
        "/v1/decisions", json=decision(workstation="GRN-INTAKE-03"), headers=integration
    )
    assert response.status_code == 200
    body = response.json()
    assert body["decision"] == "allow"
    assert body["reasons"] == []
    assert body["flags"] == []
    assert body["policy_version"] == mission.policy.version
    event = session.get(Event, body["seq"])
    assert event is not None
    assert event.event_id == body["event_id"]
    assert event.kind == "decision"
    assert event.actor_roles == ["guard_clerk"]
    assert event.action_category == "administrative"
    assert event.workstation == "GRN-INTAKE-03"
    assert event.source_ip == "testclient"
    assert event.policy_version == mission.policy.version
    assert event.occurred_at == NOV_3_MORNING


def test_denial_lists_every_reason_in_order(
    client: TestClient, integration: dict[str, str], mission: AppContext
) -> None:
    body = client.post(
        "/v1/decisions",
        headers=integration,
        json=decision(
            actor="spc.ortiz",
            action="transport_detainee",
            purpose="supply_logistics",
            break_glass=True,
            justification="short",
        ),
    ).json()
    assert body["decision"] == "deny"
    assert [r["code"] for r in body["reasons"]] == [
        "facility_not_assigned",
        "enforcement_action_forbidden",
        "action_not_permitted_for_role",
        "justification_required",
        "break_glass_not_permitted",
    ]
    assert all(r["message"] for r in body["reasons"])
    assert body["flags"] == ["break_glass"]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("actor", "sgt.nobody", "unknown_actor"),
        ("action", "arest", "unknown_action"),
        (
            "record",
            {"type": "detainee_case", "id": "X-1", "facility": "atlantis"},
            "unknown_facility",
        ),
        ("purpose", "curiosity", "unknown_purpose"),
    ],
)
def test_unknown_names_are_logged_denials_not_422(
    client: TestClient,
    integration: dict[str, str],
    mission: AppContext,
    session: Session,
    field: str,
    value: Any,
    code: str,
) -> None:
    response = client.post("/v1/decisions", headers=integration, json=decision(**{field: value}))
    assert response.status_code == 200
    body = response.json()
    assert body["decision"] == "deny"
    assert code in [r["code"] for r in body["reasons"]]
    event = session.get(Event, body["seq"])
    assert event is not None
    assert code in event.reasons
    assert event.details["reasons"][0]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        decision(actor=""),
        decision(record={"type": "detainee_case", "id": "X"}),
        decision(break_glass="sometimes"),
        decision(surprise=True),
        decision(action=["update_case"]),
    ],
)
def test_malformed_decision_is_422_and_appends_nothing(
    client: TestClient,
    integration: dict[str, str],
    mission: AppContext,
    session: Session,
    body: dict[str, Any],
) -> None:
    before = event_count(session)
    response = client.post("/v1/decisions", headers=integration, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"
    assert event_count(session) == before


def test_break_glass_cannot_override_the_enforcement_ban(
    client: TestClient, integration: dict[str, str], mission: AppContext
) -> None:
    body = client.post(
        "/v1/decisions",
        headers=integration,
        json=decision(
            actor="lt.hayes",
            action="arrest",
            break_glass=True,
            justification="urgent: detainee transfer emergency at the sally port",
        ),
    ).json()
    assert body["decision"] == "deny"
    assert "enforcement_action_forbidden" in [r["code"] for r in body["reasons"]]
    assert body["flags"] == ["break_glass"]


def test_supervisor_break_glass_outside_assignment_is_allowed_and_flagged(
    client: TestClient, integration: dict[str, str], mission: AppContext
) -> None:
    elsewhere = {"type": "detainee_case", "id": "PHE-1", "facility": "phelps"}
    denied = client.post(
        "/v1/decisions", headers=integration, json=decision(actor="lt.hayes", record=elsewhere)
    ).json()
    assert [r["code"] for r in denied["reasons"]] == ["facility_not_assigned"]
    allowed = client.post(
        "/v1/decisions",
        headers=integration,
        json=decision(
            actor="lt.hayes",
            record=elsewhere,
            break_glass=True,
            justification="Phelps clerk out sick; intake backlog of 40 cases",
        ),
    ).json()
    assert allowed["decision"] == "allow"
    assert allowed["flags"] == ["break_glass"]


def test_a_guard_role_forbids_enforcement_whatever_else_is_held(
    client: TestClient, integration: dict[str, str], mission: AppContext, session: Session
) -> None:
    dual = make_actor(session, mission, "dual.role", ["guard_clerk"], ["greene"])
    dual.roles = ["guard_clerk", "ice_officer"]  # bypasses the API's separation-of-duties check
    session.flush()
    body = client.post(
        "/v1/decisions", headers=integration, json=decision(actor="dual.role", action="arrest")
    ).json()
    assert [r["code"] for r in body["reasons"]] == ["enforcement_action_forbidden"]


def test_decisions_use_the_server_clock(
    client: TestClient, integration: dict[str, str], mission: AppContext, clock: MovableClock
) -> None:
    clock.set(at("2026-10-01T09:00:00-05:00"))
    body = client.post("/v1/decisions", headers=integration, json=decision()).json()
    # The day after the mission ended; the 2025-09-15 training lapsed on 2026-09-15 too.
    assert [r["code"] for r in body["reasons"]] == ["outside_mission_window", "training_expired"]
    clock.set(at("2025-11-03T21:30:00-06:00"))
    late = client.post("/v1/decisions", headers=integration, json=decision()).json()
    assert late["decision"] == "allow"
    assert late["flags"] == ["after_hours"]


def test_decision_with_client_event_id_is_idempotent(
    client: TestClient, integration: dict[str, str], mission: AppContext, session: Session
) -> None:
    first = client.post(
        "/v1/decisions", headers=integration, json=decision(client_event_id="cms-1")
    ).json()
    count = event_count(session)
    again = client.post(
        "/v1/decisions",
        headers=integration,
        json=decision(client_event_id="cms-1", action="arrest"),
    ).json()
    assert again["seq"] == first["seq"]
    assert again["decision"] == first["decision"]
    assert again["duplicate"] is True
    assert event_count(session) == count


def test_events_batch_results_in_request_order(
    client: TestClient, integration: dict[str, str], mission: AppContext, session: Session
) -> None:
    batch = [
        report(1),
        report(2, action="arrest"),
        report(
            3,
            actor="spc.ortiz",
            action="move_supplies",
            purpose="supply_logistics",
            record={"type": "supply_manifest", "id": "SUP-9", "facility": "phelps"},
        ),
    ]
    response = client.post("/v1/events", headers=integration, json={"events": batch})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["client_event_id"] for r in results] == ["evt-1", "evt-2", "evt-3"]
    assert [r["decision"] for r in results] == ["allow", "deny", "allow"]
    assert results[1]["flags"] == ["policy_violation"]
    assert [r["duplicate"] for r in results] == [False, False, False]
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    stored = session.get(Event, seqs[1])
    assert stored is not None
    assert stored.kind == "report"
    assert stored.occurred_at == NOV_3_MORNING
    assert stored.reasons == ["enforcement_action_forbidden", "action_not_permitted_for_role"]
    assert stored.client_event_id == "evt-2"
    assert stored.policy_version == mission.policy.version


def test_events_are_judged_as_of_occurred_at(
    client: TestClient, integration: dict[str, str], mission: AppContext
) -> None:
    # Phelps went live on 2025-10-15; an access on the 10th is reported on Nov 3rd.
    results = client.post(
        "/v1/events",
        headers=integration,
        json={
            "events": [
                report(
                    1,
                    "2025-10-10T10:00:00-05:00",
                    actor="spc.ortiz",
                    action="read_inventory",
                    purpose="supply_logistics",
                    record={"type": "supply_manifest", "id": "S-1", "facility": "phelps"},
                )
            ]
        },
    ).json()
    assert results["results"][0]["reasons"] == ["facility_not_live"]
    assert results["results"][0]["flags"] == ["policy_violation", "late_report"]


def test_duplicates_return_the_first_result_and_append_nothing(
    client: TestClient, integration: dict[str, str], mission: AppContext, session: Session
) -> None:
    first = client.post(
        "/v1/events", headers=integration, json={"events": [report(1), report(2)]}
    ).json()["results"]
    count = event_count(session)
    again = client.post(
        "/v1/events",
        headers=integration,
        json={"events": [report(2, action="arrest"), report(3), report(3)]},
    ).json()["results"]
    assert again[0]["seq"] == first[1]["seq"]
    assert again[0]["duplicate"] is True
    assert again[0]["decision"] == "allow"
    assert again[1]["duplicate"] is False
    assert again[2] == {**again[1], "duplicate": True}
    assert event_count(session) == count + 1


def test_future_occurred_at_rejects_the_whole_batch(
    client: TestClient, integration: dict[str, str], mission: AppContext, session: Session
) -> None:
    before = event_count(session)
    soon = (NOV_3_MORNING + timedelta(minutes=4)).isoformat()
    later = (NOV_3_MORNING + timedelta(minutes=6)).isoformat()
    ok = client.post("/v1/events", headers=integration, json={"events": [report(1, soon)]})
    assert ok.status_code == 200
    response = client.post(
        "/v1/events", headers=integration, json={"events": [report(2), report(3, later)]}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events", 1, "occurred_at"]
    assert event_count(session) == before + 1


@pytest.mark.parametrize(
    ("events", "loc"),
    [
        ([], ["body", "events"]),
        ([report(i) for i in range(1001)], ["body", "events"]),
        (
            [{k: v for k, v in report(1).items() if k != "occurred_at"}],
            ["body", "events", 0, "occurred_at"],
        ),
        (
            [{k: v for k, v in report(1).items() if k != "client_event_id"}],
            ["body", "events", 0, "client_event_id"],
        ),
        ([report(1, "2025-11-03T10:00:00")], ["body", "events", 0, "occurred_at"]),
        ([report(1), {**report(2), "record": "GRN-1"}], ["body", "events", 1, "record"]),
    ],
)
def test_malformed_batches_are_422_and_append_nothing(
    client: TestClient,
    integration: dict[str, str],
    mission: AppContext,
    session: Session,
    events: list[dict[str, Any]],
    loc: list[Any],
) -> None:
    before = event_count(session)
    response = client.post("/v1/events", headers=integration, json={"events": events})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert event_count(session) == before


def test_volume_spike_counts_the_log_and_the_same_batch(
    client: TestClient, integration: dict[str, str], mission: AppContext, clock: MovableClock
) -> None:
    def touch(i: int, minute: int) -> dict[str, Any]:
        return report(
            i,
            f"2025-11-03T09:{minute:02d}:00-06:00",
            record={"type": "detainee_case", "id": f"GRN-{i}", "facility": "greene"},
        )

    logged = client.post(
        "/v1/events", headers=integration, json={"events": [touch(i, i) for i in range(30)]}
    ).json()["results"]
    assert all("volume_spike" not in r["flags"] for r in logged)
    batch = [touch(i, 30 + (i - 30) // 2) for i in range(30, 53)]
    results = client.post("/v1/events", headers=integration, json={"events": batch}).json()[
        "results"
    ]
    flagged = [r["client_event_id"] for r in results if "volume_spike" in r["flags"]]
    # evt-0 … evt-49 are 50 distinct records; evt-50 is the 51st, which is "more than 50".
    assert flagged == ["evt-50", "evt-51", "evt-52"]
    # Re-reading the same record does not add a distinct record.
    again = client.post(
        "/v1/events",
        headers=integration,
        json={"events": [{**touch(5, 59), "client_event_id": "evt-again"}]},
    ).json()["results"]
    assert "volume_spike" in again[0]["flags"]  # still 53 distinct in the trailing hour
    clock.set(at("2025-11-03T12:00:00-06:00"))
    an_hour_later = client.post(
        "/v1/events",
        headers=integration,
        json={
            "events": [{**report(99, "2025-11-03T11:30:00-06:00"), "client_event_id": "evt-later"}]
        },
    ).json()
    assert an_hour_later["results"][0]["flags"] == []


def test_failed_log_write_is_503_never_allow(
    client: TestClient,
    integration: dict[str, str],
    mission: AppContext,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise OperationalError("INSERT INTO events", {}, Exception("disk I/O error"))

    before = event_count(session)
    monkeypatch.setattr(LockedAppend, "append", broken)
    response = client.post("/v1/decisions", headers=integration, json=decision())
    assert response.status_code == 503
    assert "allow" not in response.text
    batch = client.post("/v1/events", headers=integration, json={"events": [report(1)]})
    assert batch.status_code == 503
    monkeypatch.undo()
    assert event_count(session) == before


def test_failed_commit_is_503_never_allow(
    client: TestClient,
    integration: dict[str, str],
    mission: AppContext,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_commit, real_append = Session.commit, LockedAppend.append
    appending: set[int] = set()

    def append(self: LockedAppend, *args: Any) -> Any:
        appending.add(id(self._session))
        return real_append(self, *args)

    def broken_commit(self: Session) -> None:
        # Every session that appended: the decision queue writes in its own.
        if id(self) in appending:
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        real_commit(self)

    before = event_count(session)
    monkeypatch.setattr(LockedAppend, "append", append)
    monkeypatch.setattr(Session, "commit", broken_commit)
    response = client.post("/v1/decisions", headers=integration, json=decision())
    assert response.status_code == 503
    assert "allow" not in response.text
    batch = client.post("/v1/events", headers=integration, json={"events": [report(1)]})
    assert batch.status_code == 503
    monkeypatch.undo()
    assert event_count(session) == before


def test_volume_spike_counts_a_logged_access_at_the_same_instant(
    client: TestClient, integration: dict[str, str], mission: AppContext
) -> None:
    def touch(i: int) -> dict[str, Any]:
        record = {"type": "detainee_case", "id": f"GRN-{i}", "facility": "greene"}
        return report(i, "2025-11-03T09:00:00-06:00", record=record)

    client.post("/v1/events", headers=integration, json={"events": [touch(i) for i in range(50)]})
    results = client.post("/v1/events", headers=integration, json={"events": [touch(50)]}).json()
    assert results["results"][0]["flags"] == ["volume_spike"]  # the 51st in (t - 1 h, t]


def test_a_group_of_decisions_is_judged_together_in_arrival_order(
    session: Session, mission: AppContext
) -> None:
    def registered(name: str) -> Principal:
        client, _ = mission.users.create_client(session, None, ClientCreate(name=name))
        return Principal("client", client.client_id, frozenset({"integration"}))

    cms, other = registered("Case management"), registered("Jail records")
    gone = Principal("client", "no-such-client", frozenset({"integration"}))

    def ask(i: int, caller: Principal = cms, **overrides: Any) -> Ask:
        record = {"type": "detainee_case", "id": f"GRN-{i}", "facility": "greene"}
        body = DecisionRequest.model_validate(decision(record=record, **overrides))
        return Ask(caller, body, "10.0.0.7")

    asks = [ask(i) for i in range(51)]
    asks += [
        ask(51, client_event_id="req-1"),
        ask(52, client_event_id="req-1"),  # a repeat inside the group
        ask(53, other, client_event_id="req-1"),  # the same id from another client
        ask(54, gone),  # a client unknown (or deactivated) by the time its group is written
    ]
    before = event_count(session)
    admitted = mission.access.admitted(session, asks)
    assert admitted == [True] * 54 + [False]
    results = mission.access.decide(session, asks[:54])
    assert len(results) == 54

    assert [r.seq for r in results[:52]] == list(range(results[0].seq, results[0].seq + 52))
    assert [r.flags for r in results[:50]] == [[]] * 50
    assert results[50].flags == ["volume_spike"]  # the 51st distinct record in the hour
    assert results[52] == results[51].model_copy(update={"duplicate": True})
    assert not results[51].duplicate
    assert results[53].seq == results[51].seq + 1
    assert not results[53].duplicate
    assert event_count(session) == before + 53
    again = mission.access.decide(session, [ask(99, client_event_id="req-1")])
    assert again == [results[51].model_copy(update={"duplicate": True})]


def test_a_deactivated_client_is_refused_decisions_at_once(
    client: TestClient, session: Session, context: AppContext
) -> None:
    admin_user = make_user(session, context, "admin.kim", ["admin"])
    admin = token(client, admin_user.username)
    created = client.post("/v1/clients", json={"name": "Jail records"}, headers=admin)
    assert created.status_code == 201, created.text
    created = created.json()
    issued = client.post("/v1/auth/token", data={
        "grant_type": "client_credentials", "client_id": created["client_id"],
        "client_secret": created["client_secret"],
    }).json()  # fmt: skip
    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    assert client.post("/v1/decisions", headers=headers, json=decision()).status_code == 200
    patched = client.patch(
        f"/v1/clients/{created['client_id']}", json={"active": False}, headers=admin
    )
    assert patched.status_code == 200
    before = event_count(session)
    refused = client.post("/v1/decisions", headers=headers, json=decision())
    assert refused.status_code == 401
    assert event_count(session) == before


def test_what_the_schema_accepts_fits_the_log() -> None:
    """Every text field of a decision or report is at most as long as its column, so no
    request that passes validation can be refused by the database (on PostgreSQL a value
    too long for its column fails the insert)."""
    from app.access.schemas import EventReport, RecordRef

    columns = Event.__table__.columns
    fields = {
        **{name: (EventReport, name) for name in ("actor", "action", "purpose",
                                                  "client_event_id", "workstation")},
        "record_type": (RecordRef, "type"), "record_id": (RecordRef, "id"),
        "facility": (RecordRef, "facility"),
    }  # fmt: skip
    for column, (model, name) in fields.items():
        schema = model.model_json_schema()["properties"][name]
        [longest] = [s["maxLength"] for s in [schema, *schema.get("anyOf", [])] if "maxLength" in s]
        assert longest <= columns[column].type.length, column
