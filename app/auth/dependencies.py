"""FastAPI dependencies of authentication: the bearer token, the principal, role guards.

Roles, the active flag and the credential version are read from the database on every
request: a token names its subject and the credential version it was issued for, never its
rights.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from app.auth.principal import INTEGRATION_ROLES, Principal
from app.auth.tokens import TokenClaims, TokenService
from app.db import database_of, read_session
from app.errors import Unauthorized
from app.grouping import GroupQueue
from app.users import repository as users_repo
from app.vocabulary import Role

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)
Bearer = Annotated[str | None, Depends(oauth2_scheme)]


def tokens_of(request: Request) -> TokenService:
    """The process's token service (`app.context` puts it on the app's state)."""
    return cast(TokenService, request.app.state.tokens)


def _claims(request: Request, token: str | None) -> TokenClaims:
    if not token:
        raise Unauthorized("not authenticated")
    return tokens_of(request).read(token)


def lookup(session: Session, claims: TokenClaims) -> Principal | None:
    """The principal a verified token names, if it exists and is active."""
    if claims.kind == "client":
        if not users_repo.client_is_active(session, claims.subject):
            return None
        return Principal("client", claims.subject, INTEGRATION_ROLES)
    user = users_repo.signed_in(session, claims.subject)
    if (
        user is None
        or not user.active
        or not user.has_password
        # issued before the password, the active flag or the roles last changed
        or user.credential_version != claims.version
    ):
        return None
    return Principal("user", user.username, frozenset(user.roles))


def current_principal(
    request: Request, session: Annotated[Session, Depends(read_session)], token: Bearer
) -> Principal:
    """The caller of this request: 401 unless the token is valid and its subject active."""
    principal = lookup(session, _claims(request, token))
    if principal is None:
        raise Unauthorized("invalid or expired token")
    return principal


_user_lookups = GroupQueue[TokenClaims, Principal | None](max_group=256)


async def decision_caller(request: Request, token: Bearer) -> Principal:
    """The caller of POST /v1/decisions, found without a request transaction (the route
    opens none: its decisions are written in groups).

    Requires the integration role, as `require(Role.integration)` does. An integration
    client's verified token names its only role, so nothing here can refuse it with 403;
    whether the client is still registered and active is checked in the very transaction
    that appends its decision (401 otherwise). A user's roles decide 403, so a user is
    looked up now; lookups that wait go together.
    """
    claims = _claims(request, token)
    if claims.kind == "client":
        return Principal("client", claims.subject, INTEGRATION_ROLES)
    reader = database_of(request).reader

    def lookup_group(group: Sequence[TokenClaims]) -> list[Principal | None]:
        found: dict[TokenClaims, Principal | None] = {}
        with reader() as session:
            for each in group:
                if each not in found:
                    found[each] = lookup(session, each)
        return [found[each] for each in group]

    async def run(group: Sequence[TokenClaims]) -> list[Principal | None]:
        return await run_in_threadpool(lookup_group, group)

    principal = await _user_lookups.submit(reader, claims, run)
    if principal is None:
        raise Unauthorized("invalid or expired token")
    return principal.holding(INTEGRATION_ROLES)


def require(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets through principals holding any of `roles`, else 403."""
    wanted = frozenset(role.value for role in roles)

    async def guard(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return principal.holding(wanted)

    return guard


async def source_ip(request: Request) -> str | None:
    """The sender's address as the server saw it (recorded in the events it causes)."""
    return request.client.host if request.client else None
