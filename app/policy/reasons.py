"""Stable deny-reason codes and flags, in the order they are reported."""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Why a request is denied. Values are part of the public contract."""

    unknown_actor = "unknown_actor"
    inactive_actor = "inactive_actor"
    unknown_action = "unknown_action"
    unknown_facility = "unknown_facility"
    unknown_purpose = "unknown_purpose"
    outside_mission_window = "outside_mission_window"
    facility_not_live = "facility_not_live"
    facility_not_assigned = "facility_not_assigned"
    not_volunteer = "not_volunteer"
    training_missing = "training_missing"
    training_expired = "training_expired"
    enforcement_action_forbidden = "enforcement_action_forbidden"
    action_not_permitted_for_role = "action_not_permitted_for_role"
    purpose_not_allowed = "purpose_not_allowed"
    justification_required = "justification_required"
    break_glass_not_permitted = "break_glass_not_permitted"


class Flag(StrEnum):
    """Marks for oversight; an allowed event may carry flags. Values are public."""

    break_glass = "break_glass"
    after_hours = "after_hours"
    volume_spike = "volume_spike"
    policy_violation = "policy_violation"
    late_report = "late_report"


REASON_ORDER = {code: i for i, code in enumerate(ReasonCode)}
FLAG_ORDER = {flag: i for i, flag in enumerate(Flag)}
