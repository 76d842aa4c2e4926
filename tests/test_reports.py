"""Reports and reviews (contract section 9): every number equals a count computed
independently from the raw events, in Python."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.models import Event
from tests.conftest import at, record_access

Headers = Callable[[str], dict[str, str]]
ACCESS = ("decision", "report")
ACTORS = [
    ("sgt.miller", ["guard_clerk"]),
    ("spc.jones", ["guard_logistics"]),
    ("sup.ortiz", ["guard_supervisor"]),
    ("agent.reyes", ["ice_officer"]),
    ("dual.hat", ["guard_clerk", "guard_logistics"]),  # counts once under each role
    ("sgt.nobody", []),  # unknown actor: no roles at all
]
FLAGS = ["after_hours", "break_glass", "volume_spike", "policy_violation", "late_report"]


@pytest.fixture
def officer(as_role: Headers) -> dict[str, str]:
    return as_role("oversight")


@pytest.fixture
def random_log(session: Session, context: AppContext) -> None:
    """300 access events around the end of daylight saving time (Nov 2, 2025 in Chicago),
    and a few events of other kinds that reports must not count by default."""
    rng = random.Random(20251102)
    start = at("2025-10-30T00:00:00+00:00")
    actions = sorted(context.policy.action_category)
    for _ in range(300):
        actor, roles = rng.choice(ACTORS)
        decision = rng.choice(["allow", "allow", "deny"])
        reasons = rng.sample(["facility_not_assigned", "training_expired", "unknown_actor"], 2)
        record_access(
            session,
            context,
            occurred_at=start + timedelta(minutes=rng.randrange(7 * 24 * 60)),
            actor=actor,
            roles=roles,
            action=rng.choice(actions),
            record_id=f"GRN-2025-{rng.randrange(40):05d}",
            facility=rng.choice(["greene", "phelps", "ste_genevieve"]),
            purpose=rng.choice(sorted(context.policy.purposes)),
            decision=decision,
            reasons=reasons if decision == "deny" else [],
            flags=sorted(rng.sample(FLAGS, rng.choice([0, 0, 0, 1, 2]))),
            kind=rng.choice(ACCESS),
        )
    for i in range(5):
        record_access(session, context, occurred_at=start, kind="admin", record_id=f"X-{i}")


def _raw(session: Session) -> list[Event]:
    return list(session.scalars(select(Event).order_by(Event.seq)))


def _expected(
    events: Iterable[Event], context: AppContext, group_by: list[str]
) -> dict[tuple[str | None, ...], tuple[int, int, int]]:
    zone = context.policy.timezone
    totals: dict[tuple[str | None, ...], list[int]] = {}
    for event in events:
        if event.kind not in ACCESS:
            continue
        for role in event.actor_roles or [None]:
            values = {
                "facility": event.facility,
                "role": role,
                "action": event.action,
                "category": event.action_category,
                "purpose": event.purpose,
                "decision": event.decision,
                "day": event.occurred_at.astimezone(zone).date().isoformat(),
            }
            if "role" not in group_by and role != (event.actor_roles or [None])[0]:
                continue  # without a role grouping an event counts once
            key = tuple(values[name] for name in group_by)
            row = totals.setdefault(key, [0, 0, 0])
            row[0] += 1
            row[1] += event.decision == "deny"
            row[2] += bool(event.flags)
    return {key: (a, b, c) for key, (a, b, c) in totals.items()}


@pytest.mark.parametrize(
    "group_by",
    [
        [],
        ["facility"],
        ["role"],
        ["action"],
        ["category"],
        ["purpose"],
        ["decision"],
        ["day"],
        ["facility", "day"],
        ["role", "decision"],
        ["day", "role", "facility", "category"],
    ],
)
def test_summary_equals_counts_from_the_raw_events(
    client: TestClient,
    officer: dict[str, str],
    session: Session,
    context: AppContext,
    random_log: None,
    group_by: list[str],
) -> None:
    query = "&".join(f"group_by={name}" for name in group_by)
    response = client.get(f"/v1/reports/summary?{query}", headers=officer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kinds"] == list(ACCESS)
    got = {
        tuple(group["key"][name] for name in group_by): (
            group["count"],
            group["denied"],
            group["flagged"],
        )
        for group in body["groups"]
    }
    assert all(list(group["key"]) == group_by for group in body["groups"])
    assert got == _expected(_raw(session), context, group_by)


def test_summary_days_are_facility_local_across_the_dst_change(
    client: TestClient, officer: dict[str, str], session: Session, context: AppContext
) -> None:
    for moment in (
        "2025-11-02T04:30:00+00:00",  # 23:30 CDT, Nov 1
        "2025-11-02T05:30:00+00:00",  # 00:30 CDT, Nov 2
        "2025-11-03T05:30:00+00:00",  # 23:30 CST, Nov 2
        "2025-11-03T06:30:00+00:00",  # 00:30 CST, Nov 3
    ):
        record_access(session, context, occurred_at=at(moment), facility="ste_genevieve")
    url = "/v1/reports/summary?group_by=day&facility=ste_genevieve&since=2025-11-01"
    body = client.get(url, headers=officer).json()
    assert [(g["key"]["day"], g["count"]) for g in body["groups"]] == [
        ("2025-11-01", 1),
        ("2025-11-02", 2),
        ("2025-11-03", 1),
    ]


def test_summary_filters_and_kinds(
    client: TestClient,
    officer: dict[str, str],
    session: Session,
    context: AppContext,
    random_log: None,
) -> None:
    zone = context.policy.timezone
    events = _raw(session)
    url = "/v1/reports/summary?group_by=facility&since=2025-11-01&until=2025-11-02&decision=deny"
    body = client.get(url, headers=officer).json()
    expected = Counter(
        e.facility
        for e in events
        if e.kind in ACCESS
        and e.decision == "deny"
        and "2025-11-01" <= e.occurred_at.astimezone(zone).date().isoformat() <= "2025-11-02"
    )
    assert {g["key"]["facility"]: g["count"] for g in body["groups"]} == dict(expected)
    admin = client.get("/v1/reports/summary?kind=admin", headers=officer).json()
    assert admin["groups"][0]["count"] == sum(1 for e in events if e.kind == "admin")
    bad = client.get("/v1/reports/summary?group_by=week", headers=officer)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][:2] == ["query", "group_by"]


def test_denials_report_puts_mission_creep_first(
    client: TestClient, officer: dict[str, str], session: Session, context: AppContext
) -> None:
    t = at("2025-10-20T15:00:00+00:00")
    creep = [
        record_access(
            session,
            context,
            occurred_at=t,
            action="arrest",
            decision="deny",
            reasons=["enforcement_action_forbidden", "action_not_permitted_for_role"],
        ),
        record_access(
            session,
            context,
            occurred_at=t,
            actor="sup.ortiz",
            roles=["guard_supervisor"],
            action="interview",
            facility="phelps",
            decision="deny",
            reasons=["enforcement_action_forbidden"],
        ),
        record_access(  # a reported patrol the policy would have denied
            session,
            context,
            occurred_at=t,
            kind="report",
            action="patrol",
            decision="deny",
            reasons=["enforcement_action_forbidden"],
            flags=["policy_violation"],
        ),
    ]
    # An ICE officer's arrest is not mission creep; a clerk's wrong purpose is a plain denial.
    record_access(session, context, occurred_at=t, actor="agent.reyes", roles=["ice_officer"],
                  action="arrest")  # fmt: skip
    record_access(session, context, occurred_at=t, action="create_case", decision="deny",
                  reasons=["purpose_not_allowed"], facility="phelps")  # fmt: skip
    body = client.get("/v1/reports/denials", headers=officer).json()
    assert next(iter(body)) == "mission_creep"
    section = body["mission_creep"]
    assert [e["seq"] for e in section["events"]] == creep
    assert section["attempts"] == 3
    assert section["denied"] == 3
    assert section["by_actor"] == [
        {"actor": "sgt.miller", "count": 2},
        {"actor": "sup.ortiz", "count": 1},
    ]
    first = section["events"][0]
    assert (first["actor"], first["action"], first["facility"], first["decision"]) == (
        "sgt.miller",
        "arrest",
        "greene",
        "deny",
    )
    events = [e for e in _raw(session) if e.kind in ACCESS and e.decision == "deny"]
    assert body["denied"] == len(events)
    reasons = Counter(code for e in events for code in e.reasons)
    assert {r["reason"]: r["count"] for r in body["by_reason"]} == dict(reasons)
    assert body["by_reason"][0] == {"reason": "enforcement_action_forbidden", "count": 3}
    assert {a["actor"]: a["count"] for a in body["by_actor"]} == dict(
        Counter(e.actor for e in events)
    )
    assert {f["facility"]: f["count"] for f in body["by_facility"]} == dict(
        Counter(e.facility for e in events)
    )
    later = client.get("/v1/reports/denials?since=2025-10-21", headers=officer).json()
    assert later["mission_creep"]["attempts"] == 0
    assert later["denied"] == 0
    only_denials = client.get("/v1/reports/denials?decision=allow", headers=officer)
    assert only_denials.status_code == 422
    assert only_denials.json()["detail"][0]["loc"] == ["query", "decision"]


def test_denials_report_matches_the_raw_events(
    client: TestClient,
    officer: dict[str, str],
    session: Session,
    context: AppContext,
    random_log: None,
) -> None:
    body = client.get("/v1/reports/denials?facility=phelps", headers=officer).json()
    events = [e for e in _raw(session) if e.kind in ACCESS and e.facility == "phelps"]
    denied = [e for e in events if e.decision == "deny"]
    assert body["denied"] == len(denied)
    assert {r["reason"]: r["count"] for r in body["by_reason"]} == dict(
        Counter(code for e in denied for code in e.reasons)
    )
    guard = context.policy.guard_roles
    creep = [
        e.seq
        for e in events
        if e.action_category in context.policy.guard_forbidden and guard & set(e.actor_roles)
    ]
    assert [e["seq"] for e in body["mission_creep"]["events"]] == sorted(creep)


def _review(
    client: TestClient, headers: dict[str, str], seq: int, disposition: str, note: str | None
) -> dict[str, object]:
    response = client.post(
        f"/v1/events/{seq}/reviews",
        json={"disposition": disposition, "note": note},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_reviews_are_review_events(
    client: TestClient, officer: dict[str, str], session: Session, context: AppContext
) -> None:
    seq = record_access(session, context, occurred_at=at("2025-10-20T03:00:00+00:00"),
                        flags=["after_hours"])  # fmt: skip
    review = _review(client, officer, seq, "violation", "  read outside any assigned task ")
    assert review["reviewed_seq"] == seq
    assert review["disposition"] == "violation"
    assert review["note"] == "read outside any assigned task"
    event = client.get(f"/v1/events/{review['seq']}", headers=officer).json()
    assert event["kind"] == "review"
    assert event["record_type"] == "event"
    assert event["record_id"] == str(seq)
    assert event["actor"] == review["reviewer"]
    assert "oversight" in event["actor_roles"]
    assert event["details"] == {
        "reviewed_seq": seq,
        "disposition": "violation",
        "note": "read outside any assigned task",
    }
    _review(client, officer, seq, "follow_up", None)
    listed = client.get(f"/v1/events/{seq}/reviews", headers=officer).json()
    assert [r["disposition"] for r in listed] == ["violation", "follow_up"]
    assert listed[0] == review


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"disposition": "violation"}, ["body", "note"]),
        ({"disposition": "violation", "note": "   "}, ["body", "note"]),
        ({"disposition": "fine"}, ["body", "disposition"]),
        ({"disposition": "justified", "extra": 1}, ["body", "extra"]),
    ],
)
def test_review_validation(
    client: TestClient,
    officer: dict[str, str],
    session: Session,
    context: AppContext,
    body: dict[str, object],
    loc: list[str],
) -> None:
    seq = record_access(session, context, occurred_at=at("2025-10-20T15:00:00+00:00"))
    response = client.post(f"/v1/events/{seq}/reviews", json=body, headers=officer)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_only_existing_access_events_are_reviewed(
    client: TestClient, officer: dict[str, str], session: Session, context: AppContext
) -> None:
    body = {"disposition": "justified"}
    assert (
        client.post("/v1/events/999999999/reviews", json=body, headers=officer).status_code == 404
    )
    assert client.get("/v1/events/999999999/reviews", headers=officer).status_code == 404
    admin = record_access(session, context, occurred_at=at("2025-10-20T15:00:00+00:00"),
                          kind="admin")  # fmt: skip
    response = client.post(f"/v1/events/{admin}/reviews", json=body, headers=officer)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "seq"]


def test_flags_report_shows_review_state_and_latest_disposition(
    client: TestClient,
    officer: dict[str, str],
    as_role: Headers,
    session: Session,
    context: AppContext,
) -> None:
    t = at("2025-10-21T03:00:00+00:00")
    night = record_access(session, context, occurred_at=t, flags=["after_hours"])
    glass = record_access(session, context, occurred_at=t, actor="sup.ortiz",
                          roles=["guard_supervisor"], flags=["break_glass", "after_hours"],
                          break_glass=True, justification="covering Phelps intake")  # fmt: skip
    spike = record_access(session, context, occurred_at=t, flags=["volume_spike"], kind="report")
    record_access(session, context, occurred_at=t)  # not flagged
    _review(client, officer, glass, "follow_up", None)
    _review(client, officer, glass, "justified", "approved cover, ticket 118")
    auditor = as_role("auditor")  # may read the report, not review

    body = client.get("/v1/reports/flags", headers=auditor).json()
    assert (body["open"], body["reviewed"]) == (2, 1)
    assert [item["seq"] for item in body["items"]] == [night, glass, spike]
    reviewed = body["items"][1]
    assert reviewed["status"] == "reviewed"
    assert reviewed["reviews"] == 2
    assert reviewed["latest_review"]["disposition"] == "justified"
    assert reviewed["latest_review"]["note"] == "approved cover, ticket 118"
    assert reviewed["flags"] == ["break_glass", "after_hours"]
    assert body["items"][0]["status"] == "open"
    assert body["items"][0]["latest_review"] is None

    open_only = client.get("/v1/reports/flags?status=open", headers=officer).json()
    assert [item["seq"] for item in open_only["items"]] == [night, spike]
    assert (open_only["open"], open_only["reviewed"]) == (2, 1)
    done = client.get("/v1/reports/flags?status=reviewed", headers=officer).json()
    assert [item["seq"] for item in done["items"]] == [glass]
    newest = client.get("/v1/reports/flags?newest_first=true&limit=2", headers=officer).json()
    assert [item["seq"] for item in newest["items"]] == [spike, glass]
    rest = client.get(
        f"/v1/reports/flags?newest_first=true&limit=2&cursor={newest['next_cursor']}",
        headers=officer,
    ).json()
    assert [item["seq"] for item in rest["items"]] == [night]
    assert rest["next_cursor"] is None
    assert (rest["open"], rest["reviewed"]) == (2, 1)
    by_flag = client.get("/v1/reports/flags?flag=break_glass", headers=officer).json()
    assert [item["seq"] for item in by_flag["items"]] == [glass]
    assert (by_flag["open"], by_flag["reviewed"]) == (0, 1)
    _review(client, officer, night, "justified", None)
    after = client.get("/v1/reports/flags?status=open", headers=officer).json()
    assert [item["seq"] for item in after["items"]] == [spike]
    bad = client.get("/v1/reports/flags?status=closed", headers=officer)
    assert bad.json()["detail"][0]["loc"] == ["query", "status"]


def test_flags_report_matches_the_raw_events(
    client: TestClient,
    officer: dict[str, str],
    session: Session,
    random_log: None,
) -> None:
    body = client.get("/v1/reports/flags?limit=1000&since=2025-11-01", headers=officer).json()
    events = _raw(session)
    flagged = [
        e.seq
        for e in events
        if e.kind in ACCESS and e.flags and e.occurred_at >= at("2025-11-01T05:00:00+00:00")
    ]
    assert [item["seq"] for item in body["items"]] == flagged
    assert (body["open"], body["reviewed"]) == (len(flagged), 0)


def test_follow_up_is_its_own_queue_state(
    client: TestClient, officer: dict[str, str], session: Session, context: AppContext
) -> None:
    t = at("2025-10-21T03:00:00+00:00")
    first, second, third = (
        record_access(session, context, occurred_at=t, flags=["after_hours"]) for _ in range(3)
    )
    _review(client, officer, first, "follow_up", "ask the site lead")
    _review(client, officer, second, "follow_up", None)
    _review(client, officer, second, "justified", "site lead confirmed the shift")

    body = client.get("/v1/reports/flags?status=follow_up", headers=officer).json()
    assert [item["seq"] for item in body["items"]] == [first]
    assert body["items"][0]["latest_review"]["disposition"] == "follow_up"
    assert (body["open"], body["reviewed"], body["follow_up"]) == (1, 2, 1)
    open_only = client.get("/v1/reports/flags?status=open", headers=officer).json()
    assert [item["seq"] for item in open_only["items"]] == [third]


def test_events_filter_by_reason(
    client: TestClient, officer: dict[str, str], session: Session, context: AppContext
) -> None:
    t = at("2025-10-21T15:00:00+00:00")
    arrest = record_access(session, context, occurred_at=t, action="arrest", decision="deny",
                           reasons=["enforcement_action_forbidden",
                                    "action_not_permitted_for_role"])  # fmt: skip
    untrained = record_access(session, context, occurred_at=t, decision="deny",
                              reasons=["training_missing"])  # fmt: skip
    record_access(session, context, occurred_at=t)

    def seqs(path: str) -> list[int]:
        response = client.get(path, headers=officer)
        assert response.status_code == 200, response.text
        return [item["seq"] for item in response.json()["items"]]

    assert seqs("/v1/events?reason=enforcement_action_forbidden") == [arrest]
    assert seqs("/v1/events?reason=training_missing&decision=deny") == [untrained]
    assert seqs("/v1/events?reason=facility_not_assigned") == []
    denials = client.get("/v1/reports/denials?reason=training_missing", headers=officer).json()
    assert [(r["reason"], r["count"]) for r in denials["by_reason"]] == [("training_missing", 1)]
    bad = client.get("/v1/events?reason=no_such_reason", headers=officer)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "reason"]


def test_kind_access_selects_both_access_kinds(
    client: TestClient, officer: dict[str, str], session: Session, context: AppContext
) -> None:
    t = at("2025-10-21T15:00:00+00:00")
    decided = record_access(session, context, occurred_at=t)
    reported = record_access(session, context, occurred_at=t, kind="report")
    record_access(session, context, occurred_at=t, kind="admin")
    body = client.get("/v1/events?kind=access&since=2025-10-21", headers=officer).json()
    assert [item["seq"] for item in body["items"]] == [decided, reported]
    summary = client.get("/v1/reports/summary?since=2025-10-21", headers=officer).json()
    assert sum(group["count"] for group in summary["groups"]) == 2
