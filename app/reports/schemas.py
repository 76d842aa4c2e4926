"""Query parameters and response bodies for reading the log, reports, reviews and exports."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
)
from sqlalchemy import ColumnElement

from app.db import UTCDateTime
from app.ledger.models import EVENT_FIELDS, LIST, Event
from app.ledger.schemas import ReasonRead
from app.policy.reasons import Flag, ReasonCode
from app.reports.repository import CREEP_COLUMNS, FLAGGED_FIELDS
from app.strict import NAME_CHARS, PROSE_CHARS, check_day, check_instant

Kind = Literal["decision", "report", "admin", "login", "export", "review", "policy"]
# A filter's kind: one kind, or `access` for both access kinds (`decision` and `report`).
KindFilter = Literal[Kind, "access"]
Decision = Literal["allow", "deny"]
GroupBy = Literal["facility", "role", "action", "category", "purpose", "decision", "day"]
Disposition = Literal["justified", "violation", "follow_up"]
ReviewStatus = Literal["open", "reviewed", "follow_up"]

ACCESS_KINDS: tuple[Kind, ...] = ("decision", "report")


def parse_moment(value: object) -> datetime | date:
    """An RFC 3339 time with an offset, or a bare YYYY-MM-DD date (a facility-local day),
    in the years 1970-9999."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a time needs a UTC offset, e.g. 2025-10-01T14:00:00Z")
        return check_instant(value)
    if isinstance(value, date):
        return check_day(value)
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 time or a YYYY-MM-DD date")
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "not an RFC 3339 time or a YYYY-MM-DD date (send a '+' offset as %2B, or use Z)"
        ) from None
    if len(text) == 10:
        return check_day(day)
    if parsed.tzinfo is None:
        raise ValueError("a time needs a UTC offset, e.g. 2025-10-01T14:00:00Z")
    return check_instant(parsed)


Moment = Annotated[
    datetime | date,
    PlainValidator(parse_moment),
    PlainSerializer(lambda value: value.isoformat(), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "description": "RFC 3339 time with an offset, or YYYY-MM-DD (facility-local day)",
            "examples": ["2025-10-01T14:00:00Z", "2025-10-01"],
        }
    ),
]
Term = Annotated[str, StringConstraints(min_length=1, max_length=128), NAME_CHARS]


class _Query(BaseModel):
    # A misspelt filter must not silently widen the result to the whole log.
    model_config = ConfigDict(extra="forbid")


class EventFilters(_Query):
    """The filters of `GET /v1/events` (contract section 7); every one given must hold."""

    actor: Term | None = Field(None, description="who acted (username as recorded)")
    action: Term | None = Field(None, description="e.g. `read_case`, `arrest`")
    category: Term | None = Field(None, description="action category, e.g. `enforcement`")
    facility: Term | None = Field(None, description="facility key, e.g. `greene`")
    record_type: Term | None = Field(None, description="e.g. `detainee_case`")
    record_id: Term | None = Field(None, description="e.g. `GRN-2025-00042`")
    decision: Decision | None = Field(None, description="`allow` or `deny`")
    purpose: Term | None = Field(None, description="e.g. `intake_processing`")
    kind: KindFilter | None = Field(
        None, description="event kind; `access` means both access kinds, `decision` and `report`"
    )
    flag: Flag | None = Field(None, description="events carrying this flag")
    reason: ReasonCode | None = Field(
        None, description="events that give this reason, e.g. `action_forbidden_for_guard`"
    )
    since: Moment | None = Field(
        None, description="occurred at or after; a date means that facility-local day's start"
    )
    until: Moment | None = Field(
        None, description="occurred before; a date means through the end of that facility-local day"
    )


class _Page(_Query):
    limit: int = Field(100, ge=1, le=1000, description="page size (at most 1000)")
    cursor: str | None = Field(
        None, max_length=512, description="`next_cursor` of the previous page (opaque)"
    )


class EventQuery(_Page, EventFilters):
    """Filters and keyset pagination of `GET /v1/events`."""


class AccessQuery(_Page):
    """The accounting of disclosures for one record: an optional period, and pagination."""

    since: Moment | None = Field(None, description="occurred at or after")
    until: Moment | None = Field(None, description="occurred before")


class SummaryQuery(EventFilters):
    """`GET /v1/reports/summary`: the filters of `/v1/events` and the grouping."""

    group_by: list[GroupBy] = Field(
        default_factory=list, description="repeatable; `day` is the facility-local date"
    )


class DenialsQuery(EventFilters):
    """`GET /v1/reports/denials`: the filters of `/v1/events`; denials are what it counts."""

    decision: Literal["deny"] | None = Field(
        None, description="only `deny` (it also limits the mission-creep list to denials)"
    )


class FlagsQuery(_Page, EventFilters):
    """`GET /v1/reports/flags`: flagged access events, by review state, a page at a time."""

    status: ReviewStatus | None = Field(
        None,
        description="`open` (never reviewed), `reviewed` (at least once), or `follow_up` "
        "(its latest review asks for follow-up: still to act on)",
    )
    newest_first: bool = Field(False, description="order by seq descending")


def _field_type(column: ColumnElement[Any]) -> Any:
    """The Python type of an event column, as the read schemas show it."""
    kind: Any
    if column.info == LIST:
        kind = list[str]
    elif column.name == "details":
        kind = dict[str, Any]
    elif isinstance(column.type, UTCDateTime):
        kind = datetime
    else:
        kind = column.type.python_type
    return kind | None if column.nullable else kind


def event_schema(
    name: str, doc: str, fields: Sequence[str] = EVENT_FIELDS, **more: Any
) -> type[BaseModel]:
    """A read schema of the event fields `fields` (in that order), typed and described as
    the model declares them; `reasons` come explained (code and message); `more` adds
    fields of its own (pydantic `create_model` definitions)."""
    columns = Event.__table__.columns
    definitions: dict[str, Any] = {
        field: (
            list[ReasonRead] if field == "reasons" else _field_type(columns[field]),
            Field(description=columns[field].doc),
        )
        for field in fields
    }
    model: type[BaseModel] = create_model(name, __doc__=doc, **definitions, **more)
    return model


EventRead = event_schema(
    "EventRead",
    "An audit event: the fields of contract section 7 in order, then the ones that follow.",
)


class EventPage(BaseModel):
    items: list[EventRead]  # type: ignore[valid-type]
    next_cursor: str | None


AccessRead = event_schema(
    "AccessRead",
    "One entry of the accounting of disclosures: who, when, what, why, and the decision.",
    ("seq", "occurred_at", "actor", "actor_roles", "action", "action_category", "facility",
     "purpose", "justification", "break_glass", "decision", "reasons", "flags", "kind",
     "recorded_at", "source", "workstation", "event_id"),
)  # fmt: skip


class AccessPage(BaseModel):
    record_type: str
    record_id: str
    items: list[AccessRead]  # type: ignore[valid-type]
    next_cursor: str | None


class SummaryGroup(BaseModel):
    key: dict[str, str | None]
    count: int
    denied: int
    flagged: int


class SummaryReport(BaseModel):
    groups: list[SummaryGroup]
    group_by: list[GroupBy]
    kinds: list[str] = Field(description="the event kinds counted")
    since: datetime | None
    until: datetime | None


CreepAttempt = event_schema(
    "CreepAttempt",
    "A `sworn` or `enforcement` action attempted by an actor holding a Guard role.",
    CREEP_COLUMNS,
)


class ReasonCount(BaseModel):
    reason: str
    count: int


class ActorCount(BaseModel):
    actor: str | None
    count: int


class FacilityCount(BaseModel):
    facility: str | None
    count: int


class MissionCreep(BaseModel):
    attempts: int
    denied: int
    by_actor: list[ActorCount]
    events: list[CreepAttempt]  # type: ignore[valid-type]


class DenialsReport(BaseModel):
    """Mission creep first, then every denial by reason, by actor and by facility."""

    mission_creep: MissionCreep
    denied: int
    by_reason: list[ReasonCount]
    by_actor: list[ActorCount]
    by_facility: list[FacilityCount]
    kinds: list[str]
    since: datetime | None
    until: datetime | None


class ReviewCreate(_Query):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"disposition": "violation", "note": "no case assigned to this clerk"}]
        },
    )

    disposition: Disposition
    note: Annotated[str, PROSE_CHARS] | None = Field(None, max_length=4000, validate_default=True)

    @field_validator("note")
    @classmethod
    def _note_for_violation(cls, note: str | None, info: ValidationInfo) -> str | None:
        note = note.strip() if note else None
        if not note and info.data.get("disposition") == "violation":
            raise ValueError("a note is required when the disposition is `violation`")
        return note or None


class ReviewRead(BaseModel):
    seq: int
    event_id: str
    reviewed_seq: int
    disposition: str
    note: str | None
    reviewer: str | None
    reviewed_at: datetime


FlaggedEvent = event_schema(
    "FlaggedEvent",
    "A flagged access event with its review state.",
    FLAGGED_FIELDS,
    status=(ReviewStatus, Field(description="`open` (never reviewed) or `reviewed`")),
    reviews=(int, Field(description="how many reviews it has")),
    latest_review=(ReviewRead | None, Field(description="the latest review, if any")),
)


class FlagsReport(BaseModel):
    open: int = Field(description="flagged events matching the filters never reviewed")
    reviewed: int = Field(description="flagged events matching the filters reviewed at least once")
    follow_up: int = Field(
        0, description="of the reviewed, those whose latest review is `follow_up`"
    )
    items: list[FlaggedEvent]  # type: ignore[valid-type]
    next_cursor: str | None


class CheckpointRead(BaseModel):
    seq: int
    hash: str
    signed_at: str
    key_id: str
    signature: str


class Manifest(BaseModel):
    """The signed manifest of an export (signature over `manifest_message`)."""

    export_id: str
    filters: dict[str, Any]
    rows: int
    sha256: str
    first_seq: int | None
    last_seq: int | None
    checkpoint: CheckpointRead
    tree_checkpoint: str | None = Field(
        None,
        description="the signed note (C2SP checkpoint, with witness cosignatures) of the "
        "earliest tree that holds the last row; `GET /v1/exports/{export_id}/proofs` "
        "proves every row against it",
    )
    signed_at: str
    key_id: str
    signature: str


class ExportProofs(BaseModel):
    """Every row of an export proven against one signed tree: the hash of each maximal
    subtree holding none of its rows (RFC 9162 splits), each node once. Fold them with the
    rows' leaf hashes (index = seq - 1) to the checkpoint's root."""

    export_id: str
    tree_size: int
    checkpoint: str = Field(description="the signed note the manifest names")
    leaves: int = Field(description="how many rows are proven (the export's `rows`)")
    nodes: list[dict[str, Any]] = Field(
        description="`{start, end, hash}`: MTH of leaves [start, end), base64",
        examples=[[{"start": 0, "end": 4, "hash": "fO3ZTdbr2ZbJyU8WJ3vHRcJBYmt9j5qAY3zUs3k7u8U="}]],
    )


def parse_month(value: object) -> str:
    """A calendar month `YYYY-MM` in the years 1970-9999."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}", value):
        raise ValueError("expected a month as YYYY-MM, e.g. 2025-11")
    year, month = int(value[:4]), int(value[5:])
    if not 1 <= month <= 12:
        raise ValueError("the month must be 01 to 12")
    if not 1970 <= year <= 9999:
        raise ValueError("the year must be 1970 to 9999")
    return value


Month = Annotated[
    str,
    PlainValidator(parse_month),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}$",
            "description": "a calendar month in the mission's time zone",
            "examples": ["2025-11"],
        }
    ),
]


class TransparencyQuery(_Query):
    """`GET /v1/reports/transparency`: one month, as JSON (signed) or CSV."""

    month: Month = Field(
        description="YYYY-MM: the month in the mission's time zone (not in the future)"
    )
    format: Literal["json", "csv"] = Field(
        "json", description="`json` (the signed report) or `csv` (its table)"
    )


TransparencyScope = Literal["facility", "elsewhere", "all"]


class TransparencyRow(BaseModel):
    scope: TransparencyScope = Field(
        description="`facility` (one of the policy's), `elsewhere` (access events naming "
        "no facility of the policy: made-up or missing names, counted but not named), "
        "`all` (every facility: the total row)"
    )
    facility: str | None = Field(description="the facility's key (`facility` rows only)")
    name: str = Field(description="the facility's name as the policy gives it")
    cells: dict[str, int | None] = Field(
        description="the counts, in the order of `columns`; null: suppressed"
    )


class SuppressionNote(BaseModel):
    rule: str
    low: int = Field(description="the smallest count suppressed as such")
    high: int = Field(description="the largest count suppressed as such")
    relations: list[str] = Field(description="the additive relations the table satisfies")
    suppressed_cells: int = Field(description="how many cells are null")


TRANSPARENCY_EXAMPLE: dict[str, Any] = {
    "report": "transparency",
    "month": "2025-11",
    "time_zone": "America/Chicago",
    "since": "2025-11-01T05:00:00.000000Z",
    "until": "2025-12-01T06:00:00.000000Z",
    "complete": True,
    "policy_versions": ["sha256:6f1c…"],
    "generated_at": "2025-12-02T15:04:05.123456Z",
    "columns": ["accesses", "allowed", "denied", "denied_unknown_actor", "…", "flags_open"],
    "rows": [
        {
            "scope": "facility",
            "facility": "greene",
            "name": "Greene County Jail",
            "cells": {"accesses": 1843, "allowed": 1790, "denied": 53, "flags_open": None},
        },
        {
            "scope": "all",
            "facility": None,
            "name": "All facilities",
            "cells": {"accesses": 4410, "allowed": 4301, "denied": 109, "flags_open": 14},
        },
    ],
    "suppression": {
        "rule": "counts from 1 to 10 are suppressed (null); further cells are suppressed "
        "so that none can be derived from the others and the totals",
        "low": 1,
        "high": 10,
        "relations": ["each column: the facility rows and `elsewhere` sum to `all`"],
        "suppressed_cells": 31,
    },
    "first_seq": 10233,
    "last_seq": 14807,
    "as_of_seq": 15112,
    "tree_size": 15112,
    "checkpoint": "access-audit.invalid/…\n15112\n…=\n\n— access-audit.invalid/… …=\n",
    "csv_sha256": "9c1b…",
    "key_id": "3f2a9c0d1e4b5a67",
    "signature": "base64…",
}


class TransparencyReport(BaseModel):
    """The month's public report (contract 16), signed: `signature` is Ed25519, by the key
    `key_id`, over the canonical JSON of every other field (as export manifests are)."""

    model_config = ConfigDict(json_schema_extra={"examples": [TRANSPARENCY_EXAMPLE]})

    report: Literal["transparency"]
    month: str
    time_zone: str = Field(description="the zone the month is reckoned in (the mission's)")
    since: str = Field(description="the month's start (UTC), inclusive")
    until: str = Field(description="the month's end (UTC), exclusive")
    complete: bool = Field(description="false while the month is still running")
    policy_versions: list[str] = Field(description="every policy version in force that month")
    generated_at: str
    columns: list[str] = Field(description="the cells of every row, in order")
    rows: list[TransparencyRow]
    suppression: SuppressionNote
    first_seq: int | None = Field(description="the lowest seq among the month's access events")
    last_seq: int | None = Field(description="the highest seq among the month's access events")
    as_of_seq: int | None = Field(
        description="the log's head when the counts were read: every event counted, "
        "reviews included, is at or below it"
    )
    tree_size: int | None = Field(description="the size of the tree `checkpoint` signs")
    checkpoint: str | None = Field(
        description="the signed note (C2SP checkpoint, with witness cosignatures) of the "
        "earliest tree that holds `as_of_seq`"
    )
    csv_sha256: str = Field(description="SHA-256 (hex) of this report's `?format=csv` body")
    key_id: str
    signature: str
