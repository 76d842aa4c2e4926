"""FastAPI dependencies: the context, the per-request transaction, the principal, role guards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from app.auth.roles import Role
from app.context import AppContext
from app.errors import Forbidden, Unauthorized
from app.users import repository as users_repo

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(request: Request, context: ContextDep) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, else rolled back.

    Requests that may write get a writer session (on SQLite it holds the write lock from
    BEGIN, so ledger appends queue instead of failing).
    """
    factory = context.reader if request.method in READ_METHODS else context.writer
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (by username) or an integration client (by client_id)."""

    kind: str
    name: str
    roles: frozenset[str]


def get_principal(
    session: SessionDep,
    context: ContextDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    """Read the bearer token, then roles and the active flag from the database, every time."""
    if not token:
        raise Unauthorized("not authenticated")
    claims = context.tokens.read(token)
    if claims.kind == "client":
        client = users_repo.client_by_client_id(session, claims.subject)
        if client is None or not client.active:
            raise Unauthorized("invalid or expired token")
        return Principal("client", client.client_id, frozenset({Role.integration.value}))
    user = users_repo.user_by_username(session, claims.subject)
    if user is None or not user.active or user.password_hash is None:
        raise Unauthorized("invalid or expired token")
    return Principal("user", user.username, frozenset(user.roles))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets through principals holding any of `roles`, else 403."""
    wanted = frozenset(role.value for role in roles)

    def guard(principal: PrincipalDep) -> Principal:
        if principal.roles.isdisjoint(wanted):
            raise Forbidden(f"requires one of the roles: {', '.join(sorted(wanted))}")
        return principal

    return guard


AdminDep = Annotated[Principal, Depends(require(Role.admin))]
IntegrationDep = Annotated[Principal, Depends(require(Role.integration))]
ReaderDep = Annotated[Principal, Depends(require(Role.oversight, Role.auditor))]
OversightDep = Annotated[Principal, Depends(require(Role.oversight))]
AuditorDep = Annotated[Principal, Depends(require(Role.auditor))]


def client_address(request: Request) -> str | None:
    """The sender's address as the server saw it."""
    return request.client.host if request.client else None
