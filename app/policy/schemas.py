"""Request and response bodies of the policy history endpoints (`/v1/policies`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_serializer

from app.ledger.canonical import format_timestamp
from app.strict import NAME_CHARS, PROSE_CHARS, Instant

StrictText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), PROSE_CHARS]
FileName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NAME_CHARS
]

Status = Literal["proposed", "scheduled", "active", "superseded", "rejected"]


class CaseFileIn(BaseModel):
    """A file of decision cases, as in a policy folder's `tests/` (a `defaults` table and
    `case` entries), sent as JSON."""

    model_config = ConfigDict(extra="forbid")

    name: FileName = Field(description="the file's name, to say where a case failed")
    defaults: dict[str, Any] = Field(default_factory=dict)
    case: list[dict[str, Any]] = Field(min_length=1)


class PolicyProposal(BaseModel):
    """A new version of the mission policy, proposed for oversight's approval."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "content": {"mission": {"window_end": "2027-03-31", "...": "..."}},
                    "authority": "Governor's Executive Order 26-14, extending the mission",
                    "effective_from": "2026-12-04T00:00:00-06:00",
                }
            ]
        },
    )

    content: dict[str, Any] = Field(
        description="the whole policy as JSON: the tables of the policy folder's files "
        "merged (mission, facilities, break_glass, flags, purposes, categories, actions, "
        "roles, guard, training)"
    )
    authority: StrictText = Field(
        min_length=1, max_length=2000, description="the order that authorises the change"
    )
    effective_from: Instant | None = Field(
        None, description="when it takes effect once approved (default: at the approval)"
    )
    cases: list[CaseFileIn] = Field(
        default_factory=list,
        description="decision cases to run against it (as in the folder's tests/); all must pass",
    )


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: StrictText = Field(min_length=1, max_length=4000, description="why it is rejected")


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: StrictText | None = Field(None, max_length=4000, description="optional remarks")


class PolicyRead(BaseModel):
    """A version in the policy history."""

    version: str = Field(examples=["sha256:5d41402abc4b2a76b9719d911017c592..."])
    status: Status = Field(
        description="`proposed` (awaiting oversight), `scheduled` (approved, its "
        "`effective_from` still ahead), `active` (judging now), `superseded`, `rejected`"
    )
    authority: str
    proposed_by: str | None = Field(description="the admin who proposed it (null: the folder)")
    approved_by: str | None = Field(description="the oversight officer who approved it")
    effective_from: datetime | None
    seq: int = Field(description="the log event of its latest step (its activation, if any)")
    proposed_at: datetime | None = None
    decided_at: datetime | None = None
    note: str | None = Field(None, description="the approval's or rejection's note")
    name: str = Field(description="the mission's name in this version")

    @field_serializer("effective_from", "proposed_at", "decided_at")
    def _timestamp(self, value: datetime | None) -> str | None:
        return None if value is None else format_timestamp(value)


class PolicyDetail(PolicyRead):
    content: dict[str, Any]


class RuleChange(BaseModel):
    """One rule that differs between two versions."""

    section: str = Field(examples=["mission"])
    path: str = Field(examples=["mission.window_end"])
    change: Literal["added", "removed", "changed"]
    was: Any = None
    now: Any = None
    added: list[Any] | None = Field(None, description="for a list: the items it gained")
    removed: list[Any] | None = Field(None, description="for a list: the items it lost")


class PolicyDiff(BaseModel):
    version: str
    against: str
    changes: list[RuleChange]


class ReasonImpact(BaseModel):
    code: str
    added: int = Field(description="events that would get this reason")
    removed: int = Field(description="events that would lose it")


class ImpactEvent(BaseModel):
    seq: int
    kind: str
    occurred_at: datetime
    actor: str | None
    was: str
    would_be: str
    reasons: list[str] = Field(description="the reasons it would be judged with")
    was_reasons: list[str]
    flags: list[str] = Field(description="the flags it would carry")
    was_flags: list[str]

    @field_serializer("occurred_at")
    def _timestamp(self, value: datetime) -> str:
        return format_timestamp(value)


class Impact(BaseModel):
    """What re-judging a period's decisions and reports under a version would change."""

    version: str
    since: datetime | None
    until: datetime | None
    evaluated: int
    unchanged: int
    changed: int
    allow_to_deny: int
    deny_to_allow: int
    without_facts: int = Field(
        0, description="events logged before facts were recorded: not re-judged"
    )
    by_reason: list[ReasonImpact]
    events: list[ImpactEvent] = Field(description="the changed events (paged)")
    next_cursor: str | None

    @field_serializer("since", "until")
    def _timestamp(self, value: datetime | None) -> str | None:
        return None if value is None else format_timestamp(value)


class ImpactQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Instant | None = Field(None, description="occurred at or after")
    until: Instant | None = Field(None, description="occurred before")
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


class DiffQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    against: str = Field(description="the version to compare with")
