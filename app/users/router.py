"""Users, training records and integration clients (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.deps import AdminDep, ContextDep, ReadSessionDep, SourceIpDep, WriteSessionDep
from app.errors import Problem
from app.strict import NameText
from app.users.models import Client, User
from app.users.schemas import (
    ClientCreate,
    ClientCreated,
    ClientRead,
    ClientUpdate,
    TrainingCreate,
    TrainingRead,
    UserCreate,
    UserPage,
    UserRead,
    UserUpdate,
)

router = APIRouter(prefix="/v1", tags=["users"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}


@router.post(
    "/users",
    response_model=UserRead,
    status_code=201,
    responses={409: {"model": Problem, "description": "Username taken"}},
)
def create_user(
    body: UserCreate,
    session: WriteSessionDep,
    context: ContextDep,
    admin: AdminDep,
    source_ip: SourceIpDep,
) -> UserRead:
    """Create a user: service roles, mission roles or both; a password only if they log in."""
    # Read before the transaction commits (the response is built after the commit).
    return UserRead.model_validate(context.users.create_user(session, admin, body, source_ip))


@router.get("/users", response_model=UserPage)
def list_users(
    session: ReadSessionDep,
    context: ContextDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor of the previous page")
    ] = None,
) -> UserPage:
    """Users in username order, a page at a time."""
    users, next_cursor = context.users.list_users(session, cursor=cursor, limit=limit)
    return UserPage(items=[UserRead.model_validate(u) for u in users], next_cursor=next_cursor)


@router.get("/users/{username}", response_model=UserRead, responses=NOT_FOUND)
def get_user(username: NameText, session: ReadSessionDep, context: ContextDep, _: AdminDep) -> User:
    """One user with their training records."""
    return context.users.get_user(session, username)


@router.patch("/users/{username}", response_model=UserRead, responses=NOT_FOUND)
def update_user(
    username: NameText,
    body: UserUpdate,
    session: WriteSessionDep,
    context: ContextDep,
    admin: AdminDep,
    source_ip: SourceIpDep,
) -> UserRead:
    """Change roles, facilities, volunteer status, active flag or password."""
    return UserRead.model_validate(
        context.users.update_user(session, admin, username, body, source_ip)
    )


@router.post(
    "/users/{username}/training", response_model=TrainingRead, status_code=201, responses=NOT_FOUND
)
def add_training(
    username: NameText,
    body: TrainingCreate,
    session: WriteSessionDep,
    context: ContextDep,
    admin: AdminDep,
    source_ip: SourceIpDep,
) -> TrainingRead:
    """Record a completed training module; `expires_on` defaults to the module's validity."""
    return TrainingRead.model_validate(
        context.users.add_training(session, admin, username, body, source_ip)
    )


@router.post("/clients", response_model=ClientCreated, status_code=201)
def create_client(
    body: ClientCreate,
    session: WriteSessionDep,
    context: ContextDep,
    admin: AdminDep,
    source_ip: SourceIpDep,
) -> ClientCreated:
    """Register an integrating app. The secret is in this response only."""
    client, secret = context.users.create_client(session, admin, body, source_ip)
    return ClientCreated(client_id=client.client_id, client_secret=secret, name=client.name)


@router.get("/clients", response_model=list[ClientRead])
def list_clients(session: ReadSessionDep, context: ContextDep, _: AdminDep) -> list[Client]:
    """Every registered client (secrets are never shown again)."""
    return context.users.list_clients(session)


@router.patch("/clients/{client_id}", response_model=ClientRead, responses=NOT_FOUND)
def update_client(
    client_id: NameText,
    body: ClientUpdate,
    session: WriteSessionDep,
    context: ContextDep,
    admin: AdminDep,
    source_ip: SourceIpDep,
) -> ClientRead:
    """Deactivate (or reactivate) a client; its tokens stop working at once."""
    return ClientRead.model_validate(
        context.users.set_client_active(session, admin, client_id, body.active, source_ip)
    )
