"""Policy history (contract section 14): versions in the log, amendment by two people
without a restart, judged by the version active at each instant, facts, replay, impact."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.principal import Principal
from app.context import AppContext, build_context
from app.ledger.models import Event
from app.ledger.service import NewEvent
from app.policy.cases import case_files
from app.users.schemas import UserUpdate
from tests.conftest import (
    ROOT,
    MovableClock,
    at,
    decision,
    make_actor,
    make_settings,
    make_user,
    token,
)

AFTER_WINDOW = at("2026-12-03T10:00:00-06:00")  # the shipped window ended on Sep 30
EXTENDED_END = "2027-03-31"
AUTHORITY = "Executive Order 26-14: the mission is extended through March 31, 2027"


def extended(context: AppContext, end: str = EXTENDED_END) -> dict[str, Any]:
    content = copy.deepcopy(dict(context.policy.content))
    content["mission"]["window_end"] = end
    return content


def folder_cases(*, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    files = []
    for name, content in case_files(ROOT / "policies"):
        content = copy.deepcopy(content)
        content["case"] = [c for c in content["case"] if c["name"] not in skip]
        files.append({"name": name, **content})
    return files


@pytest.fixture
def people(client: TestClient, session: Session, context: AppContext) -> dict[str, dict[str, str]]:
    """Headers of an admin (the proposer), two oversight officers and an auditor."""
    for username, role in (("it.admin", "admin"), ("officer.lee", "oversight"),
                           ("officer.kim", "oversight"), ("auditor.roe", "auditor")):  # fmt: skip
        make_user(session, context, username, [role])
    return {
        name: token(client, name)
        for name in ("it.admin", "officer.lee", "officer.kim", "auditor.roe")
    }


@pytest.fixture
def miller(session: Session, context: AppContext) -> None:
    make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"], trained_on="2026-09-01")


def propose(
    client: TestClient, admin: dict[str, str], content: dict[str, Any], **extra: Any
) -> Any:
    body = {"content": content, "authority": AUTHORITY, **extra}
    return client.post("/v1/policies", json=body, headers=admin)


def policy_events(session: Session) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.kind == "policy").order_by(Event.seq)))


# -- proposing ---------------------------------------------------------------------------


def test_a_proposal_is_validated_logged_and_listed(
    client: TestClient, session: Session, context: AppContext, people: dict[str, dict[str, str]]
) -> None:
    response = propose(client, people["it.admin"], extended(context),
                       cases=folder_cases(skip=("day after the mission ends",)))  # fmt: skip
    assert response.status_code == 201, response.text
    made = response.json()
    assert made["status"] == "proposed"
    assert made["proposed_by"] == "it.admin"
    assert made["approved_by"] is None
    assert made["version"].startswith("sha256:")
    assert made["version"] != context.policy.version
    # The folder's version is recorded first (it judged everything so far), then the step.
    first, step = policy_events(session)
    assert (first.action, first.actor, first.policy_version) == (
        "activate", "system", context.policy.version,
    )  # fmt: skip
    assert first.details["content"] == context.policy.content
    assert (step.action, step.actor, step.record_id) == ("propose", "it.admin", made["version"])
    assert step.details["authority"] == AUTHORITY
    assert step.details["content"]["mission"]["window_end"] == EXTENDED_END
    listed = client.get("/v1/policies", headers=people["auditor.roe"]).json()
    assert [(p["version"], p["status"]) for p in listed] == [
        (made["version"], "proposed"), (context.policy.version, "active"),
    ]  # fmt: skip
    detail = client.get(f"/v1/policies/{made['version']}", headers=people["it.admin"]).json()
    assert detail["content"]["mission"]["window_end"] == EXTENDED_END
    again = propose(client, people["it.admin"], extended(context))
    assert again.status_code == 409


def test_a_proposal_is_refused_with_every_problem_named(
    client: TestClient, context: AppContext, people: dict[str, dict[str, str]]
) -> None:
    content = extended(context)
    content["training"]["data_handling"]["validity_days"] = "365"  # strict: no coercion
    content["actions"]["read_case"]["category"] = "no_such_category"
    del content["flags"]["late_report_hours"]
    response = propose(client, people["it.admin"], content)
    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["detail"]]
    assert ["body", "content", "training", "data_handling", "validity_days"] in locs
    assert ["body", "content", "flags", "late_report_hours"] in locs
    content = extended(context)
    content["actions"]["read_case"]["category"] = "no_such_category"
    response = propose(client, people["it.admin"], content)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "content", "actions", "read_case", "category"]
    assert "no_such_category" in error["msg"]


def test_a_proposal_whose_decision_cases_fail_lists_them(
    client: TestClient, context: AppContext, people: dict[str, dict[str, str]]
) -> None:
    response = propose(client, people["it.admin"], extended(context), cases=folder_cases())
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "cases", "rules_of_engagement.toml",
                            "day after the mission ends"]  # fmt: skip
    assert "expected deny [outside_mission_window]" in error["msg"]
    assert "got allow" in error["msg"]


def test_a_proposal_cannot_change_the_volume_window_or_start_in_the_past(
    client: TestClient, context: AppContext, people: dict[str, dict[str, str]], clock: MovableClock
) -> None:
    content = extended(context)
    content["flags"]["volume_spike_window_minutes"] = 30
    response = propose(client, people["it.admin"], content)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "volume_spike_window_minutes"
    clock.set(AFTER_WINDOW)
    past = (AFTER_WINDOW - timedelta(days=1)).isoformat()
    response = propose(client, people["it.admin"], extended(context), effective_from=past)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "effective_from"]


# -- approving ---------------------------------------------------------------------------


def test_an_approved_extension_judges_the_next_decision_without_a_restart(
    client: TestClient,
    session: Session,
    context: AppContext,
    people: dict[str, dict[str, str]],
    integration: dict[str, str],
    miller: None,
    clock: MovableClock,
) -> None:
    clock.set(AFTER_WINDOW)
    before = client.post("/v1/decisions", json=decision(), headers=integration).json()
    assert before["decision"] == "deny"
    [reason] = before["reasons"]
    assert reason["code"] == "outside_mission_window"
    assert reason["data"] == {"date": "2026-12-03", "window_start": "2025-10-01",
                              "window_end": "2026-09-30"}  # fmt: skip
    made = propose(client, people["it.admin"], extended(context)).json()
    approved = client.post(f"/v1/policies/{made['version']}/approve",
                           headers=people["officer.lee"])  # fmt: skip
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active"
    assert approved.json()["approved_by"] == "officer.lee"
    after = client.post("/v1/decisions", json=decision(), headers=integration).json()
    assert after["decision"] == "allow"
    assert after["policy_version"] == made["version"] != before["policy_version"]
    activation = policy_events(session)[-1]
    assert activation.action == "activate"
    assert activation.details["proposed_by"] == "it.admin"
    assert activation.details["approved_by"] == "officer.lee"
    assert activation.details["authority"] == AUTHORITY
    assert activation.details["effective_from"] == "2026-12-03T16:00:00.000000Z"
    listed = {p["version"]: p["status"] for p in
              client.get("/v1/policies", headers=people["officer.kim"]).json()}  # fmt: skip
    assert listed == {made["version"]: "active", context.policy.version: "superseded"}
    # Approving again, or rejecting what is active, is a conflict.
    assert client.post(f"/v1/policies/{made['version']}/approve",
                       headers=people["officer.kim"]).status_code == 409  # fmt: skip


def test_the_proposer_cannot_approve_even_after_becoming_an_oversight_officer(
    client: TestClient, session: Session, context: AppContext, people: dict[str, dict[str, str]]
) -> None:
    make_user(session, context, "dual.hat", ["admin"])
    made = propose(client, token(client, "dual.hat"), extended(context)).json()
    root = Principal("user", "root.admin", frozenset({"admin"}))
    context.users.update_user(session, root, "dual.hat", UserUpdate(roles=["oversight"]))
    session.flush()
    response = client.post(f"/v1/policies/{made['version']}/approve",
                           headers=token(client, "dual.hat"))  # fmt: skip
    assert response.status_code == 403
    assert "proposer" in response.json()["detail"]
    assert [e.action for e in policy_events(session)] == ["activate", "propose"]


def test_a_rejected_proposal_never_judges(
    client: TestClient,
    context: AppContext,
    session: Session,
    people: dict[str, dict[str, str]],
    integration: dict[str, str],
    miller: None,
    clock: MovableClock,
) -> None:
    clock.set(AFTER_WINDOW)
    made = propose(client, people["it.admin"], extended(context)).json()
    url = f"/v1/policies/{made['version']}"
    assert client.post(f"{url}/reject", json={}, headers=people["officer.lee"]).status_code == 422
    rejected = client.post(f"{url}/reject", json={"note": "no order attached"},
                           headers=people["officer.lee"])  # fmt: skip
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["note"] == "no order attached"
    assert client.post(f"{url}/approve", headers=people["officer.kim"]).status_code == 409
    assert client.post("/v1/decisions", json=decision(),
                       headers=integration).json()["decision"] == "deny"  # fmt: skip
    assert policy_events(session)[-1].action == "reject"
    # Rejected content may be proposed again (with a better authority).
    assert propose(client, people["it.admin"], extended(context)).status_code == 201


def test_a_scheduled_version_judges_from_its_effective_from_and_reports_by_occurred_at(
    client: TestClient,
    context: AppContext,
    people: dict[str, dict[str, str]],
    integration: dict[str, str],
    miller: None,
    clock: MovableClock,
) -> None:
    clock.set(AFTER_WINDOW)
    starts = AFTER_WINDOW + timedelta(minutes=5)  # within the tokens' lifetime
    made = propose(client, people["it.admin"], extended(context),
                   effective_from=starts.isoformat()).json()  # fmt: skip
    approved = client.post(f"/v1/policies/{made['version']}/approve",
                           headers=people["officer.lee"]).json()  # fmt: skip
    assert approved["status"] == "scheduled"
    response = client.post("/v1/decisions", json=decision(), headers=integration)
    assert response.json()["decision"] == "deny", response.text
    clock.set(starts + timedelta(minutes=2))
    assert client.post("/v1/decisions", json=decision(),
                       headers=integration).json()["decision"] == "allow"  # fmt: skip
    # A report is judged by the version active when the access happened.
    reports = [
        {**decision(), "client_event_id": "r-before", "occurred_at": AFTER_WINDOW.isoformat()},
        {**decision(), "client_event_id": "r-after",
         "occurred_at": (starts + timedelta(minutes=1)).isoformat()},
    ]  # fmt: skip
    results = client.post("/v1/events", json={"events": reports}, headers=integration).json()
    assert [r["decision"] for r in results["results"]] == ["deny", "allow"]
    statuses = {p["version"]: p["status"] for p in
                client.get("/v1/policies", headers=people["auditor.roe"]).json()}  # fmt: skip
    assert statuses[made["version"]] == "active"


def test_every_worker_sees_an_approval_at_its_next_request(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    """Two processes' contexts on one database: one approves, the other judges by it."""
    settings = make_settings(new_database(), tmp_path)
    clock = MovableClock()
    clock.set(AFTER_WINDOW)
    first = build_context(settings, clock=clock)
    first.start()
    second = build_context(settings, clock=clock)
    second.start()
    try:
        with first.database.transaction() as session:
            make_actor(session, first, "sgt.miller", ["guard_clerk"], ["greene"],
                       trained_on="2026-09-01")  # fmt: skip
            admin = make_user(session, first, "it.admin", ["admin"])
            officer = make_user(session, first, "officer.lee", ["oversight"])
        from app.policy.schemas import PolicyProposal

        def who(user: Any) -> Principal:
            return Principal("user", user.username, frozenset(user.roles))

        def judged(context: AppContext) -> str:
            from app.access.schemas import DecisionRequest
            from app.access.service import Ask

            ask = Ask(Principal("client", "cli_x", frozenset({"integration"})),
                      DecisionRequest.model_validate(decision()), None)  # fmt: skip
            with context.database.transaction() as session:
                [result] = context.access.decide(session, [ask])
            return result.decision

        assert judged(second) == "deny"
        with first.database.transaction() as session:
            made = first.policies.propose(session, who(admin), PolicyProposal(
                content=extended(first), authority=AUTHORITY), None)  # fmt: skip
        with first.database.transaction() as session:
            first.policies.approve(session, who(officer), made.version, None, None)
        assert judged(second) == "allow"
        # A restart with the folder, now superseded, starts and says so.
        third = build_context(settings, clock=clock)
        third.start()
        third.dispose()
    finally:
        first.dispose()
        second.dispose()


# -- start-up ----------------------------------------------------------------------------


def test_start_up_records_the_folder_once_and_refuses_a_folder_the_log_never_saw(
    new_database: Callable[[], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(new_database(), tmp_path)
    for _ in range(2):
        context = build_context(settings)
        context.start()
        with context.database.reader() as session:
            events = policy_events(session)
        context.dispose()
        assert [(e.action, e.policy_version) for e in events] == [
            ("activate", context.policy.version)
        ]
        assert events[0].details["authority"] == settings.policy_authority
    edited = tmp_path / "edited"
    edited.mkdir()
    for path in (ROOT / "policies").glob("*.toml"):
        (edited / path.name).write_text(path.read_text().replace("2026-09-30", "2027-03-31"))
    changed = build_context(settings.model_copy(update={"policy_dir": edited}))
    with pytest.raises(SystemExit, match=r"never seen.*policy propose"):
        changed.start()
    changed.dispose()


# -- reading -----------------------------------------------------------------------------


def test_the_diff_names_each_rule_that_changed(
    client: TestClient, context: AppContext, people: dict[str, dict[str, str]]
) -> None:
    content = extended(context)
    content["facilities"]["greene"]["live_from"] = "2025-10-02"
    content["guard"]["required_training"] = content["guard"]["required_training"][:-1]
    content["facilities"]["dent"] = {"name": "Dent County Jail", "live_from": "2027-01-04"}
    made = propose(client, people["it.admin"], content).json()
    client.get("/v1/policies", headers=people["it.admin"])
    response = client.get(f"/v1/policies/{made['version']}/diff",
                          params={"against": context.policy.version},
                          headers=people["officer.lee"])  # fmt: skip
    assert response.status_code == 200, response.text
    changes = {c["path"]: c for c in response.json()["changes"]}
    assert changes["mission.window_end"]["was"] == "2026-09-30"
    assert changes["mission.window_end"]["now"] == EXTENDED_END
    assert changes["facilities.greene.live_from"]["change"] == "changed"
    assert changes["facilities.dent"]["change"] == "added"
    dropped = context.policy.required_training[-1]
    assert changes["guard.required_training"]["removed"] == [dropped]
    assert len(changes) == 4
    unknown = client.get(f"/v1/policies/{made['version']}/diff",
                         params={"against": "sha256:" + "1" * 64},
                         headers=people["it.admin"])  # fmt: skip
    assert unknown.status_code == 422
    missing = client.get("/v1/policies/sha256:" + "2" * 64, headers=people["it.admin"])
    assert missing.status_code == 404


# -- facts, replay, impact ---------------------------------------------------------------


def test_decisions_record_the_facts_they_were_judged_on(
    client: TestClient,
    session: Session,
    context: AppContext,
    integration: dict[str, str],
    miller: None,
    clock: MovableClock,
) -> None:
    clock.set(at("2026-09-15T10:00:00-05:00"))
    result = client.post("/v1/decisions", json=decision(), headers=integration).json()
    assert result["decision"] == "allow", result
    event = session.get(Event, result["seq"])
    assert event is not None
    facts = event.details["facts"]
    assert facts["distinct_records"] == 1
    assert facts["actor"]["roles"] == ["guard_clerk"]
    assert facts["actor"]["facilities"] == ["greene"]
    assert facts["actor"]["volunteer"] is True
    training = facts["actor"]["training"]
    assert sorted(training) == sorted(context.policy.required_training)
    assert {span["completed_on"] for span in training.values()} == {"2026-09-01"}
    assert {span["expires_on"] for span in training.values()} == {"2027-09-01"}
    unknown = client.post("/v1/decisions", json=decision(actor="nobody"), headers=integration)
    unknown_event = session.get(Event, unknown.json()["seq"])
    assert unknown_event is not None
    assert unknown_event.details["facts"]["actor"] is None


def test_a_batch_records_each_reports_facts_as_of_its_own_local_date(
    client: TestClient,
    session: Session,
    context: AppContext,
    integration: dict[str, str],
    clock: MovableClock,
) -> None:
    # The facts of one actor are built once per local date of a batch: reports either side
    # of the day the training was done see it missing, then present, then missing again.
    make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"], trained_on="2026-03-02")
    clock.set(at("2026-03-03T10:00:00-06:00"))
    days = ["2026-03-01T23:30:00-06:00", "2026-03-02T00:30:00-06:00", "2026-03-01T22:00:00-06:00"]
    reports = [{**decision(), "client_event_id": f"day-{i}", "occurred_at": occurred}
               for i, occurred in enumerate(days)]  # fmt: skip
    response = client.post("/v1/events", json={"events": reports}, headers=integration)
    assert response.status_code == 200, response.text
    seqs = [result["seq"] for result in response.json()["results"]]
    facts = []
    for seq in seqs:
        event = session.get(Event, seq)
        assert event is not None
        facts.append(event.details["facts"]["actor"])
    trained = sorted(context.policy.required_training)
    assert [sorted(f["training"]) for f in facts] == [[], trained, []]
    assert [r["decision"] for r in response.json()["results"]] == ["deny", "allow", "deny"]


def test_training_expired_says_which_module_and_when(
    client: TestClient,
    session: Session,
    context: AppContext,
    people: dict[str, dict[str, str]],
    integration: dict[str, str],
    clock: MovableClock,
) -> None:
    make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"], trained_on="2025-01-02")
    clock.set(at("2026-03-02T10:00:00-06:00"))
    body = client.post("/v1/decisions", json=decision(), headers=integration).json()
    expired = next(r for r in body["reasons"] if r["code"] == "training_expired")
    assert expired["data"]["module"] in context.policy.required_training
    assert expired["data"]["expired_on"] < "2026-03-02"
    assert expired["data"]["expired_on"] in expired["message"]
    shown = client.get(f"/v1/events/{body['seq']}", headers=people["officer.lee"])
    shown_reason = next(r for r in shown.json()["reasons"] if r["code"] == "training_expired")
    assert shown_reason["data"] == expired["data"]


def test_replay_reproduces_every_decision_and_names_one_that_does_not_follow(
    client: TestClient,
    session: Session,
    context: AppContext,
    integration: dict[str, str],
    miller: None,
    clock: MovableClock,
) -> None:
    clock.set(at("2026-03-02T10:00:00-06:00"))
    phelps = {"type": "detainee_case", "id": "X", "facility": "phelps"}
    for body in (decision(), decision(action="arrest"), decision(actor="nobody"),
                 decision(record=phelps)):  # fmt: skip
        assert client.post("/v1/decisions", json=body, headers=integration).status_code == 200
    reports = [{**decision(), "client_event_id": "late",
                "occurred_at": "2026-02-20T23:00:00-06:00"}]  # fmt: skip
    client.post("/v1/events", json={"events": reports}, headers=integration)
    assert list(context.policies.replay(session)) == []
    # An event whose decision does not follow from its facts (as a forger would append it).
    [forged] = context.ledger.append(session, clock(), [NewEvent(
        kind="decision", occurred_at=clock(), actor="sgt.miller", actor_roles=["guard_clerk"],
        action="arrest", record_type="detainee_case", record_id="Y", facility="greene",
        purpose="case_update", decision="allow", policy_version=context.policy.version,
        details={"facts": {"actor": {"roles": ["guard_clerk"], "facilities": ["greene"],
                                     "volunteer": True, "active": True, "training": {}},
                           "distinct_records": 1}},
    )])  # fmt: skip
    found = list(context.policies.replay(session))
    assert [(problem, row.seq) for problem, row, _ in found] == [("differs", forged.seq)]
    _, _, outcome = found[0]
    assert outcome is not None
    assert outcome.now[0] == "deny"
    assert "enforcement_action_forbidden" in outcome.now[1]


def test_impact_of_a_window_extension_lists_exactly_the_decisions_that_flip(
    client: TestClient,
    session: Session,
    context: AppContext,
    people: dict[str, dict[str, str]],
    integration: dict[str, str],
    miller: None,
    clock: MovableClock,
) -> None:
    flipped = []
    for day in ("2026-09-29", "2026-09-30", "2026-10-01", "2026-10-02", "2026-10-05"):
        clock.set(at(f"{day}T10:00:00-05:00"))
        for body in (decision(), decision(action="arrest")):
            result = client.post("/v1/decisions", json=body, headers=integration).json()
            if body["action"] != "arrest" and day > "2026-09-30":
                flipped.append(result["seq"])
    made = propose(client, people["it.admin"], extended(context)).json()
    url = f"/v1/policies/{made['version']}/impact"
    params = {"since": "2026-09-01T00:00:00Z", "until": "2026-10-05T00:00:00Z", "limit": 1}
    page = client.get(url, params=params, headers=people["auditor.roe"])
    assert page.status_code == 200, page.text
    report = page.json()
    assert report["evaluated"] == 8  # Oct 5 is outside the period
    assert report["changed"] == 4  # two allows, two arrests that lose a reason but stay denied
    assert report["deny_to_allow"] == 2
    assert report["allow_to_deny"] == 0
    assert report["unchanged"] == 4
    assert report["by_reason"] == [{"code": "outside_mission_window", "added": 0, "removed": 4}]
    seen = [e["seq"] for e in report["events"]]
    while page.json()["next_cursor"]:
        page = client.get(url, params={**params, "cursor": page.json()["next_cursor"]},
                          headers=people["auditor.roe"])  # fmt: skip
        seen += [e["seq"] for e in page.json()["events"]]
    assert len(seen) == 4
    assert seen == sorted(seen)
    flips = [e for e in seen if e in flipped]
    assert flips == flipped[:2]
    other = client.get(url, params={**params, "since": "2026-09-02T00:00:00Z",
                                    "cursor": report["next_cursor"]},
                       headers=people["auditor.roe"])  # fmt: skip
    assert other.status_code == 422  # a cursor belongs to its query
