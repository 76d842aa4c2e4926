"""/v1/log: the verifiable log (C2SP checkpoints, tiles, proofs; contract section 13).

What carries only hashes is public (checkpoint, key, hash tiles, consistency proofs), so
anyone can follow the log without an account; what carries event contents (entry bundles,
inclusion proofs that name an event) needs an `auditor` or `oversight` token.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse, Response

from app.deps import ContextDep, ReaderDep, ReadSessionDep
from app.errors import NotFound, Problem
from app.ledger import transparency
from app.ledger.merkle import parse_tile_index
from app.ledger.schemas import ConsistencyProofRead, InclusionProofRead
from app.strict import MAX_SEQ

router = APIRouter(tags=["verifiable log"])

NOTE_TYPE: Final = "text/plain; charset=utf-8"
TILE_TYPE: Final = "application/octet-stream"
# A tile or bundle never changes once it exists (a partial one is named by its width).
IMMUTABLE: Final = "max-age=31536000, immutable"
# The checkpoint changes with the log: caches may keep it a second at most.
MUTABLE: Final = "no-cache"
MAX_LEVEL: Final = 63
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Not (yet) in the log"}
}
TILE_PATH = Path(
    description="`<N>[.p/<W>]`: the tile index in 3-digit path elements, all but the last "
    "prefixed with `x` (e.g. `x001/234`), and a partial tile's width",
    examples=["000", "x001/234.p/17"],
)


def _octets(data: bytes, cache: str) -> Response:
    return Response(data, media_type=TILE_TYPE, headers={"Cache-Control": cache})


def _tile_index(rest: str) -> tuple[int, int | None]:
    try:
        return parse_tile_index(rest.split("/"))
    except ValueError as exc:
        raise NotFound(f"no such tile: {exc}") from exc


@router.get(
    "/v1/log/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {NOTE_TYPE: {}}, "description": "A C2SP signed note"},
               **NOT_FOUND},
)  # fmt: skip
def checkpoint(session: ReadSessionDep) -> PlainTextResponse:
    """The latest checkpoint of the tree (C2SP `tlog-checkpoint`): origin, size, root,
    signed by the log, with the cosignatures its witnesses gave so far. Public."""
    latest = transparency.latest_checkpoint(session)
    if latest is None:
        raise NotFound("no checkpoint of the tree has been published yet")
    note = transparency.with_cosignatures(session, latest)
    return PlainTextResponse(note, media_type=NOTE_TYPE, headers={"Cache-Control": MUTABLE})


@router.get(
    "/v1/log/key",
    response_class=PlainTextResponse,
    responses={200: {"content": {NOTE_TYPE: {}}, "description": "A signed-note verifier key"}},
)
def key(session: ReadSessionDep, context: ContextDep) -> PlainTextResponse:
    """The log's verifier key, `<origin>+<hex key id>+base64(0x01 || Ed25519 key)`. Public."""
    return PlainTextResponse(context.transparency.vkey(session) + "\n", media_type=NOTE_TYPE)


@router.get(
    "/v1/log/tile/entries/{rest:path}",
    response_class=Response,
    responses={200: {"content": {TILE_TYPE: {}}, "description": "A C2SP entry bundle"},
               **NOT_FOUND},
)  # fmt: skip
def entries(session: ReadSessionDep, _: ReaderDep, rest: Annotated[str, TILE_PATH]) -> Response:
    """Entry bundle `<N>`: events N*256+1 … in seq order, each a big-endian uint16 length
    and its canonical bytes (the leaf data). Auditor or oversight."""
    index, width = _tile_index(rest)
    return _octets(transparency.entry_bundle(session, index, width), f"private, {IMMUTABLE}")


@router.get(
    "/v1/log/tile/{level}/{rest:path}",
    response_class=Response,
    responses={200: {"content": {TILE_TYPE: {}}, "description": "A C2SP hash tile"},
               **NOT_FOUND},
)  # fmt: skip
def tile(
    session: ReadSessionDep,
    context: ContextDep,
    level: Annotated[str, Path(description="the tile level, 0-63", examples=["0"])],
    rest: Annotated[str, TILE_PATH],
) -> Response:
    """Hash tile `<L>/<N>` (C2SP `tlog-tiles`): 256 hashes of 32 bytes, or the first `W`
    of a partial tile. Public."""
    if not level.isdigit() or level != str(int(level)) or int(level) > MAX_LEVEL:
        raise NotFound("no such tile: the level is 0-63 without leading zeroes")
    index, width = _tile_index(rest)
    return _octets(
        transparency.tile(session, int(level), index, width, context.transparency.tiles),
        f"public, {IMMUTABLE}",
    )


@router.get(
    "/v1/log/proof/consistency",
    response_model=ConsistencyProofRead,
    responses=NOT_FOUND,
)  # fmt: skip
def consistency(
    session: ReadSessionDep,
    context: ContextDep,
    old: Annotated[int, Query(ge=0, le=MAX_SEQ, description="the older tree size")],
    new: Annotated[int, Query(ge=0, le=MAX_SEQ, description="the newer tree size")],
) -> transparency.ConsistencyProof:
    """The proof that the tree of size `old` is a prefix of the tree of size `new`; 422
    naming `new` when it is beyond the latest checkpoint, `old` when it exceeds `new`.
    Public."""
    return transparency.consistency(session, old, new, context.transparency.tiles)


@router.get(
    "/v1/log/proof/inclusion",
    response_model=InclusionProofRead,
    responses=NOT_FOUND,
)
def inclusion(
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
    seq: Annotated[int, Query(ge=1, le=MAX_SEQ, description="the event")],
    size: Annotated[
        int | None,
        Query(ge=1, le=MAX_SEQ, description="a checkpointed tree size; default the latest"),
    ] = None,
) -> transparency.InclusionProof:
    """The proof that event `seq` is in the checkpointed tree of `size`, with that
    checkpoint (with its cosignatures); 422 naming `seq` when it is beyond `size`.
    Auditor or oversight."""
    return transparency.inclusion(session, seq, size, context.transparency.tiles)


@router.get(
    "/v1/events/{seq}/proof",
    tags=["events"],
    response_class=PlainTextResponse,
    responses={200: {"content": {NOTE_TYPE: {}}, "description": "A C2SP tlog-proof"},
               **NOT_FOUND},
)  # fmt: skip
def event_proof(
    session: ReadSessionDep,
    context: ContextDep,
    _: ReaderDep,
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
) -> PlainTextResponse:
    """Event `seq` as a C2SP `tlog-proof` bundle against the latest checkpoint: its index,
    the inclusion proof, a blank line and the signed checkpoint. With the event's canonical
    bytes it is provable offline. Auditor or oversight."""
    return PlainTextResponse(
        transparency.proof_bundle(session, seq, context.transparency.tiles), media_type=NOTE_TYPE
    )
