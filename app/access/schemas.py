"""Bodies of POST /v1/decisions and POST /v1/events (contract section 5)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from app.ledger.schemas import ReasonRead

# Names and ids: no control characters (a NUL cannot even be stored by PostgreSQL), and no
# longer than their column (`tests/test_access.py` holds the two together), so that a
# request the schema accepts can always be written.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=NO_CONTROL),
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=NO_CONTROL),
]
# Free text may hold line breaks and tabs, not other control characters.
Free = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, max_length=2000, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
    ),
]

DECISION_EXAMPLE: dict[str, Any] = {
    "actor": "sgt.miller",
    "action": "update_case",
    "record": {"type": "detainee_case", "id": "GRN-2025-00042", "facility": "greene"},
    "purpose": "intake_processing",
    "justification": "optional free text",
    "break_glass": False,
    "client_event_id": "cms-7f3a9",
    "workstation": "GRN-INTAKE-03",
}


class RecordRef(BaseModel):
    """The case record being accessed."""

    model_config = ConfigDict(extra="forbid")

    type: ShortText
    id: Text
    facility: ShortText


class DecisionRequest(BaseModel):
    """May `actor` do `action` to `record` for `purpose`? Unknown names become logged denials."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [DECISION_EXAMPLE]})

    actor: Text
    action: ShortText
    record: RecordRef
    purpose: ShortText
    justification: Free | None = None
    break_glass: bool = False
    client_event_id: Text | None = None
    workstation: Text | None = None


class EventReport(DecisionRequest):
    """An access that already happened, judged as of `occurred_at`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{**DECISION_EXAMPLE, "occurred_at": "2025-11-03T14:05:00-06:00"}]
        },
    )

    occurred_at: AwareDatetime
    client_event_id: Text


class EventBatch(BaseModel):
    """1 to 1000 reported events; all are appended or none."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventReport] = Field(min_length=1, max_length=1000)


class DecisionResult(BaseModel):
    decision: str
    reasons: list[ReasonRead]
    seq: int
    event_id: str
    flags: list[str]
    policy_version: str
    duplicate: bool = False


class EventResult(BaseModel):
    client_event_id: str
    seq: int
    event_id: str
    decision: str
    reasons: list[str]
    flags: list[str]
    duplicate: bool


class BatchResult(BaseModel):
    results: list[EventResult]
