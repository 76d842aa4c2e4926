"""The schema of the policy files (TOML). Unknown keys are errors, so typos cannot hide."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.strict import Day

NAME = r"^[a-z][a-z0-9_]*$"
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class _Strict(BaseModel):
    # Strict types: a policy sent as JSON is refused where it would be converted ("365"
    # days, 1 for true), so that what is validated is what the version digests.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# A calendar date: a date (TOML) or a YYYY-MM-DD string (JSON, and the canonical content).
PolicyDate = Annotated[Day, Field(strict=False)]


class MissionSection(_Strict):
    name: str
    timezone: str
    window_start: PolicyDate
    window_end: PolicyDate


class FacilitySection(_Strict):
    name: str
    live_from: PolicyDate


class BreakGlassSection(_Strict):
    overrides: list[str] = Field(default_factory=list)
    min_justification_chars: int = Field(ge=1)


class FlagsSection(_Strict):
    after_hours_start: str
    after_hours_end: str
    volume_spike_records: int = Field(ge=1)
    volume_spike_window_minutes: int = Field(ge=1)
    late_report_hours: int = Field(ge=1)

    @field_validator("after_hours_start", "after_hours_end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("must be a 24-hour HH:MM time")
        return value


class ActionSection(_Strict):
    category: str
    purposes: list[str] | Literal["any"]


class RoleSection(_Strict):
    guard: bool
    categories: list[str]
    break_glass: bool = False


class GuardSection(_Strict):
    forbidden_categories: list[str]
    must_be_volunteer: bool = True
    must_be_assigned: bool = True
    required_training: list[str]


class TrainingModuleSection(_Strict):
    description: str
    validity_days: int = Field(ge=1)


class PolicyDocument(_Strict):
    """The whole policy once every file in the folder is merged by top-level table."""

    mission: MissionSection
    facilities: dict[str, FacilitySection] = Field(min_length=1)
    break_glass: BreakGlassSection
    flags: FlagsSection
    purposes: dict[str, str] = Field(min_length=1)
    categories: dict[str, str] = Field(min_length=1)
    actions: dict[str, ActionSection] = Field(min_length=1)
    roles: dict[str, RoleSection] = Field(min_length=1)
    guard: GuardSection
    training: dict[str, TrainingModuleSection]
