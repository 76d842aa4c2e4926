"""Reading the log, reports, reviews and exports (oversight and auditors; contract 7, 9, 10)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from app.auth.principal import Principal
from app.deps import (
    AuditorDep,
    ContextDep,
    OversightDep,
    ReaderDep,
    ReadSessionDep,
    SourceIpDep,
    WriteSessionDep,
)
from app.errors import Problem
from app.reports.exports import EventsExport, Exporter
from app.reports.schemas import (
    AccessPage,
    AccessQuery,
    DenialsQuery,
    DenialsReport,
    EventFilters,
    EventPage,
    EventQuery,
    EventRead,
    ExportProofs,
    FlagsQuery,
    FlagsReport,
    Manifest,
    ReviewCreate,
    ReviewRead,
    SummaryQuery,
    SummaryReport,
    TransparencyQuery,
    TransparencyReport,
)
from app.strict import MAX_SEQ, NameText

router = APIRouter(prefix="/v1")

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
Seq = Annotated[int, Path(ge=1, le=MAX_SEQ, description="the event's sequence number")]


@router.get("/events", response_model=EventPage, tags=["log"])
def list_events(
    query: Annotated[EventQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
) -> EventPage:
    """Events matching every filter given, in seq order, a page at a time (`since`/`until` on
    `occurred_at`)."""
    return context.reports.list_events(session, query)


@router.get("/events/{seq}", response_model=EventRead, responses=NOT_FOUND, tags=["log"])
def get_event(seq: Seq, session: ReadSessionDep, context: ContextDep, _: ReaderDep) -> BaseModel:
    """One audit event by its sequence number."""
    return context.reports.get_event(session, seq)


@router.get("/records/{record_type}/{record_id}/accesses", response_model=AccessPage, tags=["log"])
def record_accesses(
    record_type: NameText,
    record_id: NameText,
    query: Annotated[AccessQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
) -> AccessPage:
    """The accounting of disclosures: who accessed the record, when, how, why, and the decision."""
    return context.reports.record_accesses(session, record_type, record_id, query)


@router.get("/reports/summary", response_model=SummaryReport, tags=["reports"])
def summary(
    query: Annotated[SummaryQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
) -> SummaryReport:
    """Access counts, denials and flagged events per group (`day` is facility-local)."""
    return context.reports.summary_report(session, query)


@router.get("/reports/denials", response_model=DenialsReport, tags=["reports"])
def denials(
    query: Annotated[DenialsQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
) -> DenialsReport:
    """Mission creep first (Guard roles attempting sworn or enforcement actions), then every
    denial by reason, by actor and by facility."""
    return context.reports.denials_report(session, query)


@router.get("/reports/flags", response_model=FlagsReport, tags=["reports"])
def flags(
    query: Annotated[FlagsQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
) -> FlagsReport:
    """Flagged access events with their review state and latest disposition."""
    return context.reports.flags_report(session, query)


@router.get(
    "/reports/transparency",
    response_model=TransparencyReport,
    responses={
        200: {
            "content": {"text/csv": {}},
            "description": "The signed report (JSON), or its table with `format=csv`",
        },
    },
    summary="The month's public transparency report (signed, suppressed)",
    tags=["reports"],
)
def transparency_report(
    query: Annotated[TransparencyQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    _: OversightDep,
) -> Response | TransparencyReport:
    """What the state publishes under its open-records law (contract 16): for each facility
    of the policy, the mission's access events in the month (facility-local, in the
    policy's time zone): accesses, allowed, denied, denials by reason, break-glass uses,
    Guard sworn/enforcement attempts, flags reviewed and open; a row `elsewhere` for events
    naming no facility of the policy, and the total row `all`.

    Every count from 1 to 10 is suppressed (null), and as many more as needed that none
    can be derived from the others and the totals. The report is signed like an export
    manifest (Ed25519 over the canonical JSON without `signature`, key
    `GET /v1/integrity/public-key`) and carries the C2SP checkpoint of a tree that holds
    every event counted. `format=csv` returns the same table (a suppressed cell reads
    `suppressed`) with `X-Report-SHA256` (equal to the signed `csv_sha256`) and a `Link`
    to the JSON."""
    published = context.publication.month(session, query)
    if query.format == "json":
        return published.report
    return Response(
        published.csv,
        media_type=CSV_MEDIA_TYPE,
        headers={
            "X-Report-SHA256": published.report.csv_sha256,
            "Link": f'</v1/reports/transparency?month={query.month}>; rel="describedby"; '
            'type="application/json"',
            "Content-Disposition": f'attachment; filename="transparency-{query.month}.csv"',
        },
    )


@router.post(
    "/events/{seq}/reviews",
    response_model=ReviewRead,
    status_code=201,
    responses=NOT_FOUND,
    tags=["reports"],
)
def add_review(
    seq: Seq,
    body: ReviewCreate,
    session: WriteSessionDep,
    context: ContextDep,
    officer: OversightDep,
    source_ip: SourceIpDep,
) -> ReviewRead:
    """Review an access event: `justified`, `violation` (a note is required) or `follow_up`."""
    return context.reports.add_review(session, officer, seq, body, source_ip)


@router.get(
    "/events/{seq}/reviews",
    response_model=list[ReviewRead],
    responses=NOT_FOUND,
    tags=["reports"],
)
def list_reviews(
    seq: Seq, session: ReadSessionDep, context: ContextDep, _: ReaderDep
) -> list[ReviewRead]:
    """Every review of an event, oldest first."""
    return context.reports.list_reviews(session, seq)


async def _stream(export: EventsExport) -> AsyncIterator[bytes]:
    try:
        while (chunk := await run_in_threadpool(export.next_chunk)) is not None:
            yield chunk
        # Recorded before the final empty chunk, so a client that has the whole body can
        # fetch the manifest at once.
        await run_in_threadpool(export.finish)
    except Exception:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(export.abandon)
        raise


@router.get(
    "/exports/events.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "the events CSV, streamed"}},
    tags=["exports"],
)
def export_events(
    filters: Annotated[EventFilters, Query()],
    context: ContextDep,
    auditor: AuditorDep,
    source_ip: SourceIpDep,
) -> StreamingResponse:
    """The events matching the filters as CSV (columns of contract section 7), streamed;
    the `X-Export-Id` header names the export for its signed manifest."""
    export = context.exports.events(filters, _exporter(auditor, source_ip))
    return StreamingResponse(
        _stream(export),
        media_type=CSV_MEDIA_TYPE,
        headers={
            "X-Export-Id": export.export_id,
            "Content-Disposition": f'attachment; filename="events-{export.export_id}.csv"',
        },
        # Runs after the response, also when the client went away mid-stream.
        background=BackgroundTask(export.abandon),
    )


@router.get(
    "/exports/summary.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "the summary report as CSV"}},
    tags=["exports"],
)
def export_summary(
    query: Annotated[SummaryQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    auditor: AuditorDep,
    source_ip: SourceIpDep,
) -> Response:
    """The summary report (parameters of `/v1/reports/summary`) as CSV, with `X-Export-Id`."""
    export_id, body = context.exports.summary(session, query, _exporter(auditor, source_ip))
    return Response(
        body,
        media_type=CSV_MEDIA_TYPE,
        headers={
            "X-Export-Id": export_id,
            "Content-Disposition": f'attachment; filename="summary-{export_id}.csv"',
        },
    )


@router.get(
    "/exports/{export_id}/manifest",
    response_model=Manifest,
    responses={**NOT_FOUND, 409: {"model": Problem, "description": "The export did not complete"}},
    tags=["exports"],
)
def export_manifest(
    export_id: NameText,
    session: ReadSessionDep,
    context: ContextDep,
    _: AuditorDep,
) -> Manifest:
    """The signed manifest of an export: rows, SHA-256 of the body, seq range, a checkpoint."""
    return context.exports.manifest(session, export_id)


@router.get(
    "/exports/{export_id}/proofs",
    response_model=ExportProofs,
    responses={
        **NOT_FOUND,
        409: {"model": Problem, "description": "Not a completed events export"},
    },
    tags=["exports"],
)
def export_proofs(
    export_id: NameText,
    session: ReadSessionDep,
    context: ContextDep,
    _: AuditorDep,
) -> ExportProofs:
    """Every row of an events export proven against the signed tree its manifest names
    (`tree_checkpoint`): compact, each tree node once. `tools/verify_export.py --proofs`
    checks it offline."""
    return context.exports.proofs(session, export_id)


def _exporter(auditor: Principal, source_ip: str | None) -> Exporter:
    return Exporter(auditor.name, sorted(auditor.roles), auditor.name, source_ip)
