"""The compiled mission policy and its evaluator: plain dict and frozenset lookups.

Deny overrides allow: every rule that fails adds a reason, reasons come out in the stable
order of `ReasonCode`, and a request is allowed only when there is none. The clock is an
argument, so the same request can be judged as of any moment.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.policy.reasons import FLAG_ORDER, REASON_ORDER, Flag, ReasonCode

ALLOW = "allow"
DENY = "deny"


@dataclass(frozen=True, slots=True)
class Facility:
    key: str
    name: str
    live_from: date


@dataclass(frozen=True, slots=True)
class TrainingRecord:
    module: str
    completed_on: date
    expires_on: date


@dataclass(frozen=True, slots=True)
class ActorProfile:
    """What the evaluator needs to know about the person acting."""

    username: str
    roles: tuple[str, ...]
    facilities: frozenset[str]
    volunteer: bool
    active: bool = True
    training: Mapping[str, tuple[TrainingRecord, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One attempted access to a case record."""

    action: str
    facility: str
    purpose: str
    record_type: str = ""
    record_id: str = ""
    justification: str | None = None
    break_glass: bool = False


@dataclass(frozen=True, slots=True)
class Reason:
    """A deny reason: its code, a message for people, and the facts behind it (`data`:
    JSON values, e.g. the expired module and its date)."""

    code: ReasonCode
    message: str
    data: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """How a reason is recorded in an event's `details.reasons`."""
        out: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.data:
            out["data"] = dict(self.data)
        return out


@dataclass(frozen=True, slots=True)
class Judgement:
    """The outcome: decision, every reason, the action's category and the flags."""

    decision: str
    reasons: tuple[Reason, ...]
    category: str | None
    flags: tuple[Flag, ...]

    @property
    def reason_codes(self) -> list[str]:
        return [r.code.value for r in self.reasons]


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """The policy folder compiled into lookups; build it with `app.policy.loader`."""

    version: str
    name: str
    timezone: ZoneInfo
    window_start: date
    window_end: date
    facilities: dict[str, Facility]
    purposes: frozenset[str]
    categories: tuple[str, ...]
    action_category: dict[str, str]
    action_purposes: dict[str, frozenset[str]]
    role_categories: dict[str, frozenset[str]]
    guard_roles: frozenset[str]
    break_glass_roles: frozenset[str]
    guard_forbidden: frozenset[str]
    guard_must_be_volunteer: bool
    guard_must_be_assigned: bool
    required_training: tuple[str, ...]
    training_validity_days: dict[str, int]
    break_glass_overrides: frozenset[ReasonCode]
    min_justification_chars: int
    after_hours_start: time
    after_hours_end: time
    volume_spike_records: int
    volume_spike_window_minutes: int
    late_report_hours: int
    # The merged policy content (JSON values) whose canonical digest is `version`.
    content: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def mission_roles(self) -> frozenset[str]:
        return frozenset(self.role_categories)

    @property
    def volume_window(self) -> timedelta:
        return timedelta(minutes=self.volume_spike_window_minutes)

    def local_date(self, at: datetime) -> date:
        return at.astimezone(self.timezone).date()

    def training_expiry(self, module: str, completed_on: date) -> date:
        """The default expiry of a module completed on a date (its validity in days)."""
        return completed_on + timedelta(days=self.training_validity_days[module])

    def evaluate(
        self, actor: ActorProfile | None, request: AccessRequest, at: datetime
    ) -> tuple[list[Reason], str | None]:
        """Every deny reason that applies to `request` by `actor` at `at`, and the category."""
        reasons: list[Reason] = []
        add = reasons.append
        category = self.action_category.get(request.action)
        facility = self.facilities.get(request.facility)

        if actor is None:
            add(Reason(ReasonCode.unknown_actor, "the actor is not a known user"))
        elif not actor.active:
            add(Reason(ReasonCode.inactive_actor, f"{actor.username} is deactivated"))
        if category is None:
            add(Reason(ReasonCode.unknown_action, f"{request.action!r} is not a mission action"))
        if facility is None:
            add(Reason(ReasonCode.unknown_facility, f"{request.facility!r} is not a facility"))
        if request.purpose not in self.purposes:
            add(Reason(ReasonCode.unknown_purpose, f"{request.purpose!r} is not a purpose"))

        roles = actor.roles if actor is not None else ()
        is_guard = not self.guard_roles.isdisjoint(roles)
        may_break_glass = not self.break_glass_roles.isdisjoint(roles)
        justification = (request.justification or "").strip()
        glass_ok = (
            request.break_glass
            and may_break_glass
            and len(justification) >= self.min_justification_chars
        )
        overridden = self.break_glass_overrides if glass_ok else frozenset()

        if actor is not None and is_guard:
            today = self.local_date(at)
            if not self.window_start <= today <= self.window_end:
                add(
                    Reason(
                        ReasonCode.outside_mission_window,
                        f"{today} is outside the mission window "
                        f"{self.window_start} to {self.window_end}",
                        {
                            "date": today.isoformat(),
                            "window_start": self.window_start.isoformat(),
                            "window_end": self.window_end.isoformat(),
                        },
                    )
                )
            if facility is not None and today < facility.live_from:
                add(
                    Reason(
                        ReasonCode.facility_not_live,
                        f"{facility.name} is live from {facility.live_from}",
                        {"facility": facility.key, "live_from": facility.live_from.isoformat()},
                    )
                )
            if (
                self.guard_must_be_assigned
                and facility is not None
                and facility.key not in actor.facilities
                and ReasonCode.facility_not_assigned not in overridden
            ):
                add(
                    Reason(
                        ReasonCode.facility_not_assigned,
                        f"{actor.username} is not assigned to {facility.name}",
                        {"facility": facility.key, "assigned": sorted(actor.facilities)},
                    )
                )
            if self.guard_must_be_volunteer and not actor.volunteer:
                add(Reason(ReasonCode.not_volunteer, f"{actor.username} is not a volunteer"))
            missing, expired = self._training_gaps(actor, today)
            if missing:
                add(
                    Reason(
                        ReasonCode.training_missing,
                        "no training in " + ", ".join(missing),
                        {"modules": missing},
                    )
                )
            if expired:
                modules = [
                    {"module": module, "expired_on": on.isoformat()} for module, on in expired
                ]
                add(
                    Reason(
                        ReasonCode.training_expired,
                        "training expired in "
                        + ", ".join(f"{module} (on {on})" for module, on in expired),
                        {**modules[0], "modules": modules},
                    )
                )

        if category is not None and actor is not None:
            if is_guard and category in self.guard_forbidden:
                add(
                    Reason(
                        ReasonCode.enforcement_action_forbidden,
                        f"Guard roles may not perform {category} actions ({request.action})",
                        {"action": request.action, "category": category},
                    )
                )
            if not any(category in self.role_categories.get(r, ()) for r in roles):
                add(
                    Reason(
                        ReasonCode.action_not_permitted_for_role,
                        f"no role of {actor.username} permits {category} actions",
                        {"category": category, "roles": list(roles)},
                    )
                )
        if category is not None and request.purpose in self.purposes:
            if request.purpose not in self.action_purposes[request.action]:
                add(
                    Reason(
                        ReasonCode.purpose_not_allowed,
                        f"{request.action} is not done for {request.purpose}",
                        {
                            "action": request.action,
                            "purpose": request.purpose,
                            "allowed": sorted(self.action_purposes[request.action]),
                        },
                    )
                )
        if request.break_glass:
            if len(justification) < self.min_justification_chars:
                add(
                    Reason(
                        ReasonCode.justification_required,
                        f"break glass needs a justification of at least "
                        f"{self.min_justification_chars} characters",
                        {"min_chars": self.min_justification_chars, "given": len(justification)},
                    )
                )
            if actor is not None and not may_break_glass:
                add(
                    Reason(
                        ReasonCode.break_glass_not_permitted,
                        f"no role of {actor.username} may break glass",
                    )
                )
        if len(reasons) > 1:
            reasons.sort(key=lambda r: REASON_ORDER[r.code])
        return reasons, category

    def turning_days(self, actor: ActorProfile | None) -> tuple[date, ...]:
        """The local dates, in order, on which what `evaluate` finds for `actor` may
        change: the window's start and the day after its end, each facility's live date,
        and each training record's completion and the day after its expiry. Between two
        of them (before the first; from the last) `evaluate` finds the same reasons, by
        code, and the same category (outside the window its message names the day). Kept
        beside `evaluate`: a rule that reads the date must add its days here."""
        days = {self.window_start, self.window_end + timedelta(days=1)}
        days.update(f.live_from for f in self.facilities.values())
        if actor is not None:
            for records in actor.training.values():
                for record in records:
                    days.add(record.completed_on)
                    days.add(record.expires_on + timedelta(days=1))
        return tuple(sorted(days))

    @staticmethod
    def span(turning: tuple[date, ...], today: date) -> int:
        """Which span between the `turning_days` of an actor the local date falls in: two
        dates of one span are judged alike (the same reasons by code, the same category)."""
        return bisect_right(turning, today)

    def _training_gaps(
        self, actor: ActorProfile, today: date
    ) -> tuple[list[str], list[tuple[str, date]]]:
        missing: list[str] = []
        expired: list[tuple[str, date]] = []
        for module in self.required_training:
            latest: TrainingRecord | None = None
            for record in actor.training.get(module, ()):
                if record.completed_on <= today and (
                    latest is None or record.completed_on >= latest.completed_on
                ):
                    latest = record
            if latest is None:
                missing.append(module)
            elif latest.expires_on < today:
                expired.append((module, latest.expires_on))
        return missing, expired

    def is_late(self, occurred_at: datetime, reported_at: datetime) -> bool:
        """Whether a report of `occurred_at` made at `reported_at` is late."""
        return reported_at - occurred_at > timedelta(hours=self.late_report_hours)

    def is_after_hours(self, at: datetime) -> bool:
        local = at.astimezone(self.timezone).time()
        return not self.after_hours_start <= local < self.after_hours_end

    def day_and_hours(self, at: datetime) -> tuple[date, bool]:
        """`local_date(at)` and `is_after_hours(at)`, converting the instant once."""
        local = at.astimezone(self.timezone)
        return local.date(), not self.after_hours_start <= local.time() < self.after_hours_end

    def judge(
        self,
        actor: ActorProfile | None,
        request: AccessRequest,
        occurred_at: datetime,
        *,
        reported_at: datetime | None = None,
        distinct_records_in_window: int = 1,
    ) -> Judgement:
        """Evaluate and flag. `reported_at` is set for after-the-fact reports."""
        reasons, category = self.evaluate(actor, request, occurred_at)
        return self.conclude(
            reasons, category, request.break_glass, occurred_at, reported_at=reported_at,
            distinct_records_in_window=distinct_records_in_window,
        )  # fmt: skip

    def conclude(
        self,
        reasons: Sequence[Reason],
        category: str | None,
        break_glass: bool,
        occurred_at: datetime,
        *,
        reported_at: datetime | None = None,
        distinct_records_in_window: int = 1,
    ) -> Judgement:
        """The judgement of what `evaluate` found for a request (broken glass or not) at
        `occurred_at`: the decision and the flags (`judge` is `evaluate` then `conclude`)."""
        decision = DENY if reasons else ALLOW
        flags: list[Flag] = []
        if break_glass:
            flags.append(Flag.break_glass)
        if self.is_after_hours(occurred_at):
            flags.append(Flag.after_hours)
        if distinct_records_in_window > self.volume_spike_records:
            flags.append(Flag.volume_spike)
        if reported_at is not None:
            if decision == DENY:
                flags.append(Flag.policy_violation)
            if self.is_late(occurred_at, reported_at):
                flags.append(Flag.late_report)
        if len(flags) > 1:
            flags.sort(key=FLAG_ORDER.__getitem__)
        return Judgement(decision, tuple(reasons), category, tuple(flags))


def actor_facts(actor: ActorProfile | None, today: date) -> dict[str, Any] | None:
    """What the rules saw of `actor` on the local date `today`, as JSON values (recorded in
    `details.facts.actor`): roles, assigned facilities, volunteer status, whether active,
    and per training module the latest completion on or before `today` with its expiry.
    None for an unknown actor. `profile_from_facts` turns it back into a profile that
    every rule judges exactly as it judged the original on that date."""
    if actor is None:
        return None
    training: dict[str, dict[str, str]] = {}
    for module, records in actor.training.items():
        latest: TrainingRecord | None = None
        for record in records:
            if record.completed_on <= today and (
                latest is None or record.completed_on >= latest.completed_on
            ):
                latest = record
        if latest is not None:
            training[module] = {
                "completed_on": latest.completed_on.isoformat(),
                "expires_on": latest.expires_on.isoformat(),
            }
    return {
        "roles": list(actor.roles),
        "facilities": sorted(actor.facilities),
        "volunteer": actor.volunteer,
        "active": actor.active,
        "training": training,
    }


def profile_from_facts(username: str, facts: Mapping[str, Any] | None) -> ActorProfile | None:
    """The profile `actor_facts` recorded (None for an unknown actor)."""
    if facts is None:
        return None
    training = {
        module: (
            TrainingRecord(
                module,
                date.fromisoformat(span["completed_on"]),
                date.fromisoformat(span["expires_on"]),
            ),
        )
        for module, span in facts.get("training", {}).items()
    }
    return ActorProfile(
        username=username,
        roles=tuple(facts.get("roles", ())),
        facilities=frozenset(facts.get("facilities", ())),
        volunteer=bool(facts.get("volunteer")),
        active=bool(facts.get("active", True)),
        training=training,
    )
