"""/v1/integrity: verification, signed checkpoints, and the public keys (auditor, oversight)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse

from app.deps import AuditorDep, ContextDep, ReaderDep, ReadSessionDep, WriteSessionDep
from app.errors import Problem
from app.ledger import service
from app.ledger.schemas import PublicKeyRead, SignedCheckpoint, VerificationRead
from app.ledger.verify import Verification
from app.strict import MAX_SEQ, NameText

router = APIRouter(prefix="/v1/integrity", tags=["integrity"])

PEM_MEDIA_TYPE = "application/x-pem-file"
NEXT_CURSOR = "X-Next-Cursor"


class PemResponse(PlainTextResponse):
    media_type = PEM_MEDIA_TYPE


@router.get("/verify", response_model=VerificationRead)
def verify(
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
    from_seq: Annotated[
        int | None, Query(ge=1, le=MAX_SEQ, description="first seq to check")
    ] = None,
    to_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ, description="last seq to check")] = None,
) -> Verification:
    """Recompute the chain and check every checkpoint in range; `valid` false names the break."""
    trusted = context.transparency.trusted_keys(session)
    pinned = context.transparency.pinned
    return service.verify(session, context.ledger, trusted, from_seq, to_seq, pinned=pinned)


@router.get(
    "/checkpoints",
    response_model=list[SignedCheckpoint],
    responses={200: {"headers": {NEXT_CURSOR: {
        "description": "cursor of the next page; absent on the last page",
        "schema": {"type": "string"},
    }}}},
)  # fmt: skip
def list_checkpoints(
    response: Response,
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
    order: Annotated[
        Literal["newest", "oldest"], Query(description="newest (default) or oldest first")
    ] = "newest",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=512, description=f"the {NEXT_CURSOR} of the previous page")
    ] = None,
) -> list[SignedCheckpoint]:
    """Signed heads in the order they were signed, newest first unless `order=oldest`.

    The body is the list the contract names; the next page's cursor is in a header.
    """
    rows, next_cursor = service.list_checkpoints(
        session, context.cursors, newest_first=order == "newest", cursor=cursor, limit=limit
    )
    if next_cursor is not None:
        response.headers[NEXT_CURSOR] = next_cursor
    return [SignedCheckpoint.model_validate(row) for row in rows]


@router.post(
    "/checkpoints",
    response_model=SignedCheckpoint,
    status_code=201,
    responses={409: {"model": Problem, "description": "The log is empty"}},
)
def create_checkpoint(
    session: WriteSessionDep, context: ContextDep, _: AuditorDep
) -> dict[str, Any]:
    """Sign the current head now (checkpoints are also signed every 1000 events)."""
    return service.sign_checkpoint(session, context.ledger)


@router.get(
    "/public-key",
    response_class=PemResponse,
    responses={
        200: {
            "content": {PEM_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": "The public key (PEM)",
        },
        404: {"model": Problem, "description": "No such key"},
    },
)
def public_key(
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
    key_id: Annotated[
        NameText | None, Query(max_length=32, description="an older key's id")
    ] = None,
) -> PemResponse:
    """The Ed25519 public key (PEM) that signs now, or the one named by `key_id`."""
    found_id, pem = service.public_key_pem(session, context.ledger, key_id)
    return PemResponse(pem, headers={"X-Key-Id": found_id})


@router.get("/public-keys", response_model=list[PublicKeyRead])
def public_keys(
    session: ReadSessionDep, context: ContextDep, _: ReaderDep
) -> list[service.PublicKey]:
    """Every public key that ever signed, by id, oldest first, so old checkpoints verify."""
    return service.public_keys(session, context.ledger)
