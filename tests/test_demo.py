"""`access-audit demo`: realistic data through the real evaluator, loaded once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from app import demo
from app.context import build_context
from app.ledger.canonical import GENESIS_HASH, canonical_bytes, chain_hash
from app.ledger.models import Event
from app.policy.schemas import ImpactQuery
from app.users.models import User
from tests.conftest import make_settings


def test_demo_loads_a_year_of_the_mission(new_database: Callable[[], str], tmp_path: Path) -> None:
    context = build_context(make_settings(new_database(), tmp_path))
    assert not demo.already_loaded(context)
    demo.load(context.settings, scale=0.3)
    assert demo.already_loaded(context)
    with context.database.reader() as session:
        users = {u.username: u for u in session.scalars(select(User))}
        events = session.scalars(select(Event).order_by(Event.seq)).all()
    roles = {role for u in users.values() for role in u.roles}
    assert roles >= {"admin", "oversight", "auditor", "guard_clerk", "guard_logistics",
                     "guard_supervisor", "ice_officer"}  # fmt: skip
    assert not users["pvt.kline"].volunteer
    access = [e for e in events if e.kind in ("decision", "report")]
    assert len(access) > 1500
    assert {e.kind for e in access} == {"decision", "report"}
    reasons = Counter(code for e in access for code in e.reasons)
    flags = Counter(flag for e in access for flag in e.flags)
    assert reasons["enforcement_action_forbidden"] == len(demo.CREEP)
    assert reasons["training_expired"] > 0  # spc.dawson, before her training was renewed
    assert reasons["not_volunteer"] > 0
    assert reasons["outside_mission_window"] > 0
    assert reasons["facility_not_live"] > 0
    assert set(flags) == {"break_glass", "after_hours", "volume_spike", "policy_violation",
                          "late_report"}  # fmt: skip
    assert 0.005 < sum(e.decision == "deny" for e in access) / len(access) < 0.2
    facilities = Counter(e.facility for e in access)
    assert set(facilities) == {"greene", "phelps", "ste_genevieve"}
    # Weekdays carry the work; nights are rare.
    local = [e.occurred_at.astimezone(context.policy.timezone) for e in access]
    assert sum(t.weekday() < 5 for t in local) / len(local) > 0.85
    assert sum(context.policy.is_after_hours(t) for t in local) / len(local) < 0.08
    prev = GENESIS_HASH
    for event in events:
        row = {c: getattr(event, c) for c in Event.__table__.columns.keys()}
        assert event.hash == chain_hash(prev, canonical_bytes(row))
        prev = event.hash
    # The year was judged by the shipped policy; then one amendment, through the real path.
    with context.database.reader() as session:
        assert list(context.policies.replay(session)) == []  # every decision reproduces
        history = context.policies.list(session)
        assert [(p.status, p.proposed_by, p.approved_by) for p in history] == [
            ("active", "admin", "dps.okafor"), ("superseded", None, None),
        ]  # fmt: skip
        assert history[0].authority.startswith("DEMO DATA")
        # The lingering accesses after the window closed are what the extension flips.
        impact = context.policies.impact(session, history[0].version, ImpactQuery(
            since=datetime(2026, 10, 1, 5, tzinfo=UTC), until=demo.PROPOSED_AT))  # fmt: skip
        assert impact.deny_to_allow == 3
        assert impact.allow_to_deny == 0
        assert [r.code for r in impact.by_reason] == ["outside_mission_window"]
    after = [e for e in access if e.occurred_at > demo.APPROVED_AT]
    assert [e.decision for e in after] == ["allow"] * 3
    assert {e.policy_version for e in after} == {history[0].version}
    facts = demo.summary(context)
    assert facts["demo"]
    assert facts["client"]["client_id"].startswith("cli_")
    context.dispose()
