"""What replay remembers is exact: `evaluate` finds the same reasons (by code) and category
on two dates of one span of `turning_days`, for every rule that reads the date."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from app.policy.evaluator import AccessRequest, ActorProfile, TrainingRecord
from app.policy.loader import load_policy
from tests.conftest import ROOT

POLICY = load_policy(ROOT / "policies")


def _profile(trained: date | None, roles: tuple[str, ...] = ("guard_clerk",)) -> ActorProfile:
    training = {}
    if trained is not None:
        training = {
            module: (TrainingRecord(module, trained, POLICY.training_expiry(module, trained)),)
            for module in POLICY.required_training
        }
    return ActorProfile("sgt.test", roles, frozenset({"greene"}), True, True, training)


def test_dates_in_one_span_are_evaluated_alike() -> None:
    start = POLICY.window_start - timedelta(days=40)
    days = [start + timedelta(days=i) for i in range(800)]
    profiles = [
        None,
        _profile(None),
        _profile(POLICY.window_start + timedelta(days=20)),
        _profile(POLICY.window_start - timedelta(days=300)),
        _profile(POLICY.window_start, ("ice_officer",)),
    ]
    requests = [
        AccessRequest("read_case", facility, "records_request")
        for facility in (*POLICY.facilities, "atlantis")
    ]
    for profile in profiles:
        turning = POLICY.turning_days(profile)
        for request in requests:
            seen: dict[object, object] = {}
            for day in days:
                at = datetime.combine(day, time(12), POLICY.timezone).astimezone(UTC)
                reasons, category = POLICY.evaluate(profile, request, at)
                found = ([r.code for r in reasons], category)
                key = POLICY.span(turning, day)
                assert seen.setdefault(key, found) == found, (profile, request, day)
