"""POST /v1/decisions and POST /v1/events (integration clients)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from app.access import queue, service
from app.access.schemas import BatchResult, DecisionRequest, DecisionResult, EventBatch
from app.deps import (
    ContextDep,
    DecisionCallerDep,
    IntegrationDep,
    SessionDep,
    SessionFactoriesDep,
    client_address,
)
from app.errors import Problem

router = APIRouter(prefix="/v1", tags=["access"])

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "The log cannot be written: nothing is allowed"}
}


def commit_now(session: Session) -> None:
    """Commit in the handler's own thread, before the answer is built.

    The session dependency would commit too, but only after the response is serialised and
    a threadpool hop later, and the ledger lock lasts until the commit: every other append
    would wait out that detour. The dependency's commit then has nothing left to do.
    """
    session.commit()


@router.post("/decisions", response_model=DecisionResult, responses=UNAVAILABLE)
async def decide(
    body: DecisionRequest,
    request: Request,
    context: ContextDep,
    factories: SessionFactoriesDep,
    caller: DecisionCallerDep,
) -> DecisionResult:
    """Ask before an access: allow or deny with every reason; the decision is logged first."""
    ask = service.Ask(caller, body, client_address(request))
    result = await queue.decide(context, factories.writer, ask)
    request.app.state.metrics.decisions.labels("decision", result.decision).inc()
    return result


@router.post("/events", response_model=BatchResult, responses=UNAVAILABLE)
def report_events(
    body: EventBatch,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    caller: IntegrationDep,
) -> BatchResult:
    """Report 1-1000 accesses that happened; judged as of `occurred_at`, all or nothing."""
    results = service.report(session, context, caller, body, client_address(request))
    commit_now(session)
    for result in results:
        if not result.duplicate:
            request.app.state.metrics.decisions.labels("report", result.decision).inc()
    return BatchResult(results=results)
