"""POST /v1/auth/token (OAuth2 password and client-credentials grants), GET /v1/auth/me."""

from __future__ import annotations

import base64
from typing import Annotated, Literal
from urllib.parse import unquote_plus

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from app.auth.schemas import LoginName, Me, Token
from app.deps import ContextDep, PrincipalDep, SourceIpDep
from app.errors import UNAUTHORIZED_HEADERS, Problem

router = APIRouter(prefix="/v1/auth", tags=["auth"])

INVALID = {"detail": "invalid credentials"}


def basic_client(request: Request) -> tuple[str | None, str | None]:
    """The client id and secret of an `Authorization: Basic` header (form-encoded, RFC 6749
    2.3.1), or (None, None)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        client_id, colon, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not colon:
        return None, None
    return unquote_plus(client_id), unquote_plus(secret)


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
    request: Request,
    context: ContextDep,
    source_ip: SourceIpDep,
    grant_type: Annotated[Literal["password", "client_credentials"], Form()],
    username: Annotated[LoginName | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    client_id: Annotated[LoginName | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
) -> Token | JSONResponse:
    """Exchange a username and password, or a client id and secret, for a bearer token."""
    if grant_type == "password":
        name, secret = username, password
    else:
        # RFC 6749 2.3.1: a client may authenticate with HTTP Basic (as /docs' Authorize does)
        name, secret = (client_id, client_secret) if client_id else basic_client(request)
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
