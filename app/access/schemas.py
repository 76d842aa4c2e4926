"""Bodies of POST /v1/decisions and POST /v1/events (contract section 5)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.ledger.schemas import ReasonRead
from app.strict import NAME_CHARS, PROSE_CHARS, Instant, StrictBool

# Names and ids: no control characters, lone surrogates or bidirectional overrides (a NUL
# cannot even be stored by PostgreSQL), and no longer than their column
# (`tests/test_access.py` holds the two together), so that a request the schema accepts can
# always be written.
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), NAME_CHARS
]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), NAME_CHARS
]
# Free text may hold line breaks and tabs, not other control characters.
Free = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), PROSE_CHARS]

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
    break_glass: StrictBool = False
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

    occurred_at: Instant
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
