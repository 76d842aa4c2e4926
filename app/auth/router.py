"""POST /v1/auth/token (OAuth2 password and client-credentials grants), GET /v1/auth/me."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse

from app.auth.schemas import Me, Token
from app.deps import ContextDep, PrincipalDep, SourceIpDep
from app.errors import UNAUTHORIZED_HEADERS, Problem

router = APIRouter(prefix="/v1/auth", tags=["auth"])

INVALID = {"detail": "invalid credentials"}


@router.post(
    "/token",
    response_model=Token,
    responses={
        401: {"model": Problem, "description": "Any credential failure, always alike"},
        429: {
            "model": Problem,
            "description": "Too many token requests from this address; see Retry-After",
        },
    },
)
async def issue_token(
    context: ContextDep,
    source_ip: SourceIpDep,
    grant_type: Annotated[Literal["password", "client_credentials"], Form()],
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
) -> Token | JSONResponse:
    """Exchange a username and password, or a client id and secret, for a bearer token."""
    if grant_type == "password":
        name, secret = username, password
    else:
        name, secret = client_id, client_secret
    # Async: the password is checked in the logins' own threads (`app.auth.service`), and
    # the attempt is recorded in transactions of their own, committed before the answer.
    token = await context.logins.login(grant_type, name, secret, source_ip)
    if token is None:
        return JSONResponse(INVALID, status_code=401, headers=UNAUTHORIZED_HEADERS)
    return Token(access_token=token, expires_in=context.settings.token_ttl_seconds)


@router.get("/me", response_model=Me)
def who_am_i(principal: PrincipalDep) -> Me:
    """The authenticated caller and the roles they hold now."""
    return Me(kind=principal.kind, name=principal.name, roles=sorted(principal.roles))
