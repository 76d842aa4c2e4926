"""Users, training records and integration clients (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.deps import AdminDep, ContextDep, SessionDep, client_address
from app.errors import Problem
from app.users import service
from app.users.models import Client, Training, User
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
    body: UserCreate, request: Request, session: SessionDep, context: ContextDep, admin: AdminDep
) -> User:
    """Create a user: service roles, mission roles or both; a password only if they log in."""
    return service.create_user(session, context, admin, body, client_address(request))


@router.get("/users", response_model=UserPage)
def list_users(
    session: SessionDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> UserPage:
    """Users in username order, a page at a time."""
    users, next_cursor = service.list_users(session, after=cursor, limit=limit)
    return UserPage(items=[UserRead.model_validate(u) for u in users], next_cursor=next_cursor)


@router.get("/users/{username}", response_model=UserRead, responses=NOT_FOUND)
def get_user(username: str, session: SessionDep, _: AdminDep) -> User:
    """One user with their training records."""
    return service.get_user(session, username)


@router.patch("/users/{username}", response_model=UserRead, responses=NOT_FOUND)
def update_user(
    username: str,
    body: UserUpdate,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    admin: AdminDep,
) -> User:
    """Change roles, facilities, volunteer status, active flag or password."""
    return service.update_user(session, context, admin, username, body, client_address(request))


@router.post(
    "/users/{username}/training", response_model=TrainingRead, status_code=201, responses=NOT_FOUND
)
def add_training(
    username: str,
    body: TrainingCreate,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    admin: AdminDep,
) -> Training:
    """Record a completed training module; `expires_on` defaults to the module's validity."""
    return service.add_training(session, context, admin, username, body, client_address(request))


@router.post("/clients", response_model=ClientCreated, status_code=201)
def create_client(
    body: ClientCreate,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    admin: AdminDep,
) -> ClientCreated:
    """Register an integrating app. The secret is in this response only."""
    client, secret = service.create_client(session, context, admin, body, client_address(request))
    return ClientCreated(client_id=client.client_id, client_secret=secret, name=client.name)


@router.get("/clients", response_model=list[ClientRead])
def list_clients(session: SessionDep, _: AdminDep) -> list[Client]:
    """Every registered client (secrets are never shown again)."""
    return service.list_clients(session)


@router.patch("/clients/{client_id}", response_model=ClientRead, responses=NOT_FOUND)
def update_client(
    client_id: str,
    body: ClientUpdate,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    admin: AdminDep,
) -> Client:
    """Deactivate (or reactivate) a client; its tokens stop working at once."""
    return service.set_client_active(
        session, context, admin, client_id, body.active, client_address(request)
    )
