"""FastAPI dependencies: the context, the per-request transaction, the principal, role guards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Annotated, Any
from weakref import WeakKeyDictionary

import anyio
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.auth.roles import Role
from app.auth.tokens import TokenClaims
from app.context import AppContext
from app.errors import Forbidden, LedgerUnavailable, Unauthorized
from app.grouping import GroupQueue
from app.users import repository as users_repo

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_context(request: Request) -> AppContext:
    # async (as `guard` below): a plain function dependency costs a threadpool round trip.
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_session(request: Request, context: ContextDep) -> AsyncIterator[Session]:
    """One transaction per request: committed when the handler returns, else rolled back.

    Requests that may write get a writer session (on SQLite it holds the write lock from
    BEGIN, so ledger appends queue instead of failing). Opening a session does no I/O, so
    this runs on the event loop; only a commit or rollback with work to do goes to the
    threadpool (a handler that committed itself leaves nothing, and costs no hop).
    """
    writes = request.method not in READ_METHODS
    async with writer_turn(context) if writes else nullcontext():
        session = (context.writer if writes else context.reader)()
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_end, session, False)
            raise
        if session.in_transaction():
            await run_in_threadpool(_end, session, True)
        else:
            session.close()


def _end(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


# One lock per event loop and engine (a lock must not outlive or cross its loop).
_sqlite_writers: WeakKeyDictionary[
    asyncio.AbstractEventLoop, WeakKeyDictionary[Engine, asyncio.Lock]
] = WeakKeyDictionary()


@asynccontextmanager
async def writer_turn(context: AppContext) -> AsyncIterator[None]:
    """On SQLite, this process's writers queue on a lock of its own before BEGIN IMMEDIATE.

    SQLite's busy handler sleeps in growing steps (up to 100 ms) while another connection
    holds the write lock, so threads waiting inside it turn a queue into a trickle (and a
    p99 of seconds); a lock hands over at once. Other processes still queue in SQLite.
    """
    engine = context.engine
    if engine.dialect.name != "sqlite":
        yield
        return
    locks = _sqlite_writers.setdefault(asyncio.get_running_loop(), WeakKeyDictionary())
    lock = locks.setdefault(engine, asyncio.Lock())  # on the loop's own thread: no race
    try:
        await asyncio.wait_for(lock.acquire(), context.settings.ledger_lock_timeout_seconds)
    except TimeoutError:
        raise LedgerUnavailable("the audit log is busy or unavailable; try again") from None
    try:
        yield
    finally:
        lock.release()


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True, slots=True)
class SessionFactories:
    """Sessions a handler opens itself, outside the request's transaction.

    A streamed body outlives the request's session, and a GET that must also write (an
    export's audit event, a checkpoint signed on demand) needs a writer of its own.
    """

    reader: Callable[[], Session]
    writer: Callable[[], Session]


async def get_session_factories(context: ContextDep) -> SessionFactories:
    return SessionFactories(context.reader, context.writer)


SessionFactoriesDep = Annotated[SessionFactories, Depends(get_session_factories)]

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


INTEGRATION_ROLES = frozenset({Role.integration.value})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (by username) or an integration client (by client_id)."""

    kind: str
    name: str
    roles: frozenset[str]


TokenDep = Annotated[str | None, Depends(oauth2_scheme)]


def get_principal(session: SessionDep, context: ContextDep, token: TokenDep) -> Principal:
    """Read the bearer token, then roles and the active flag from the database, every time."""
    principal = _lookup(session, _claims(context, token))
    if principal is None:
        raise Unauthorized("invalid or expired token")
    return principal


_user_groups = GroupQueue[TokenClaims, Principal | None](max_group=256)


async def get_decision_caller(
    factories: SessionFactoriesDep, context: ContextDep, token: TokenDep
) -> Principal:
    """The caller of POST /v1/decisions, found outside the request's transaction (the route
    never opens one: a writer session would hold SQLite's write turn for the whole request).

    Requires the integration role, as `require(Role.integration)` does. An integration
    client's verified token names its only role, so nothing here can refuse it with 403;
    whether the client is still registered and active is checked in the very transaction
    that appends its decision (401 otherwise), instead of in one of its own. A user's roles
    decide 403, so a user is looked up now; lookups that wait go together.
    """
    claims = _claims(context, token)
    if claims.kind == "client":
        return Principal("client", claims.subject, INTEGRATION_ROLES)
    reader = factories.reader

    async def run(group: Sequence[TokenClaims]) -> list[Principal | None]:
        return await run_in_threadpool(_lookup_group, reader, group)

    principal = await _user_groups.submit(reader, claims, run)
    if principal is None:
        raise Unauthorized("invalid or expired token")
    return _holding(principal, INTEGRATION_ROLES)


def _lookup_group(
    reader: Callable[[], Session], group: Sequence[TokenClaims]
) -> list[Principal | None]:
    found: dict[TokenClaims, Principal | None] = {}
    with reader() as session:
        for claims in group:
            if claims not in found:
                found[claims] = _lookup(session, claims)
    return [found[claims] for claims in group]


def _claims(context: AppContext, token: str | None) -> TokenClaims:
    if not token:
        raise Unauthorized("not authenticated")
    return context.tokens.read(token)


def _lookup(session: Session, claims: TokenClaims) -> Principal | None:
    """The principal a verified token names, if it exists and is active."""
    if claims.kind == "client":
        if not users_repo.client_is_active(session, claims.subject):
            return None
        return Principal("client", claims.subject, INTEGRATION_ROLES)
    user = users_repo.user_by_username(session, claims.subject)
    if user is None or not user.active or user.password_hash is None:
        return None
    return Principal("user", user.username, frozenset(user.roles))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets through principals holding any of `roles`, else 403."""
    wanted = frozenset(role.value for role in roles)

    async def guard(principal: PrincipalDep) -> Principal:
        return _holding(principal, wanted)

    return guard


def _holding(principal: Principal, wanted: frozenset[str]) -> Principal:
    if principal.roles.isdisjoint(wanted):
        raise Forbidden(f"requires one of the roles: {', '.join(sorted(wanted))}")
    return principal


AdminDep = Annotated[Principal, Depends(require(Role.admin))]
IntegrationDep = Annotated[Principal, Depends(require(Role.integration))]
DecisionCallerDep = Annotated[Principal, Depends(get_decision_caller)]
ReaderDep = Annotated[Principal, Depends(require(Role.oversight, Role.auditor))]
OversightDep = Annotated[Principal, Depends(require(Role.oversight))]
AuditorDep = Annotated[Principal, Depends(require(Role.auditor))]


def client_address(request: Request) -> str | None:
    """The sender's address as the server saw it."""
    return request.client.host if request.client else None
