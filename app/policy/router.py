"""The policy history: read it, amend it by two people, judge a period under a version
(contract section 14)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from app.deps import (
    AdminDep,
    ContextDep,
    OversightDep,
    PolicyReaderDep,
    ReaderDep,
    ReadSessionDep,
    SourceIpDep,
    WriteSessionDep,
)
from app.errors import Problem
from app.policy.schemas import (
    Approval,
    DiffQuery,
    Impact,
    ImpactQuery,
    PolicyDetail,
    PolicyDiff,
    PolicyProposal,
    PolicyRead,
    Rejection,
)

router = APIRouter(prefix="/v1", tags=["policy"])

Version = Annotated[
    str,
    Path(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="a policy version: `sha256:` and the digest of its canonical content",
    ),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}
STEP: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such version in the log"},
    409: {"model": Problem, "description": "the version is not (or no longer) proposed"},
}


@router.get("/policies", response_model=list[PolicyRead])
def list_policies(
    session: ReadSessionDep, context: ContextDep, _: PolicyReaderDep
) -> list[PolicyRead]:
    """Every policy version the log holds, the most recent step first: proposed, scheduled
    (approved, not yet in effect), active, superseded or rejected."""
    return context.policies.list(session)


@router.post(
    "/policies",
    response_model=PolicyRead,
    status_code=201,
    responses={
        409: {"model": Problem, "description": "that version is already proposed or active"}
    },
)
def propose_policy(
    body: PolicyProposal,
    session: WriteSessionDep,
    context: ContextDep,
    admin: AdminDep,
    source_ip: SourceIpDep,
) -> PolicyRead:
    """Propose a new version: validated as a policy folder is (422 naming each problem)
    and its decision cases run (422 listing each failing case). An oversight officer other
    than the proposer approves or rejects it."""
    return context.policies.propose(session, admin, body, source_ip)


@router.get("/policies/{version}", response_model=PolicyDetail, responses=NOT_FOUND)
def get_policy(
    version: Version, session: ReadSessionDep, context: ContextDep, _: PolicyReaderDep
) -> PolicyDetail:
    """A version with its full content (the merged policy tables as JSON)."""
    return context.policies.get(session, version)


@router.get("/policies/{version}/diff", response_model=PolicyDiff, responses=NOT_FOUND)
def diff_policy(
    version: Version,
    query: Annotated[DiffQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    _: PolicyReaderDep,
) -> PolicyDiff:
    """What `version` changes from `against`, rule by rule (the window, facilities and
    their live dates, roles and categories, purposes per action, training, break glass,
    flag thresholds)."""
    return context.policies.diff(session, version, query.against)


@router.post(
    "/policies/{version}/approve",
    response_model=PolicyRead,
    responses={**STEP, 403: {"model": Problem, "description": "the proposer cannot approve"}},
)
def approve_policy(
    version: Version,
    session: WriteSessionDep,
    context: ContextDep,
    officer: OversightDep,
    source_ip: SourceIpDep,
    body: Annotated[Approval | None, Body()] = None,
) -> PolicyRead:
    """Approve a proposal: it judges from its `effective_from` (or now, if that has
    passed) in every worker, without a restart."""
    return context.policies.approve(session, officer, version, body, source_ip)


@router.post("/policies/{version}/reject", response_model=PolicyRead, responses=STEP)
def reject_policy(
    version: Version,
    body: Rejection,
    session: WriteSessionDep,
    context: ContextDep,
    officer: OversightDep,
    source_ip: SourceIpDep,
) -> PolicyRead:
    """Reject a proposal, saying why."""
    return context.policies.reject(session, officer, version, body, source_ip)


@router.get("/policies/{version}/impact", response_model=Impact, responses=NOT_FOUND)
def policy_impact(
    version: Version,
    query: Annotated[ImpactQuery, Query()],
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
) -> Impact:
    """Judge every decision and report that occurred in [since, until) again under this
    version, from the facts each recorded: how many would change, by reason, and the
    changed events a page at a time."""
    return context.policies.impact(session, version, query)
