"""POST /v1/decisions and POST /v1/events (integration clients)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Request

from app.access.schemas import BatchResult, DecisionRequest, DecisionResult, EventBatch
from app.access.service import Ask
from app.context import context_of
from app.deps import ContextDep, DecisionCallerDep, IntegrationDep, SourceIpDep, WriteSessionDep
from app.errors import Problem

router = APIRouter(prefix="/v1", tags=["access"])

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "The log cannot be written: nothing is allowed"}
}


@router.post("/decisions", response_model=DecisionResult, responses=UNAVAILABLE)
async def decide(
    body: DecisionRequest, request: Request, caller: DecisionCallerDep
) -> DecisionResult:
    """Ask before an access: allow or deny with every reason; the decision is logged first.

    No request transaction: decisions are written in groups (`app.access.queue`). The
    busiest route: the context and the sender's address are read from the request itself
    (each dependency costs the event loop a resolution on every request)."""
    context = context_of(request)
    source_ip = request.client.host if request.client else None
    result = await context.decisions.decide(Ask(caller, body, source_ip))
    request.app.state.metrics.judged("decision", result.decision, 1)
    return result


@router.post("/events", response_model=BatchResult, responses=UNAVAILABLE)
def report_events(
    body: EventBatch,
    request: Request,
    session: WriteSessionDep,
    context: ContextDep,
    caller: IntegrationDep,
    source_ip: SourceIpDep,
) -> BatchResult:
    """Report 1-1000 accesses that happened; judged as of `occurred_at`, all or nothing."""
    results = context.access.report(session, caller, body, source_ip)
    judged = Counter(result.decision for result in results if not result.duplicate)
    for decision, count in judged.items():
        request.app.state.metrics.judged("report", decision, count)
    return BatchResult(results=results)
