"""Every query on users, training records and clients."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from app.users.models import Client, Training, User

_users = User.__table__
_training = Training.__table__
_clients = Client.__table__

# The access path's queries, built once (Core, no ORM objects): they run on every decision.
_ACTOR_COLUMNS = (
    _users.c.username, _users.c.roles, _users.c.facilities, _users.c.volunteer, _users.c.active,
    _training.c.module, _training.c.completed_on, _training.c.expires_on,
)  # fmt: skip
_ACTOR_ROWS = (
    select(*_ACTOR_COLUMNS)
    .outerjoin(_training, _training.c.user_id == _users.c.id)
    .where(_users.c.username.in_(bindparam("names", expanding=True)))
    .order_by(_users.c.username, _training.c.completed_on, _training.c.id)
)
_CLIENT_ACTIVE = select(_clients.c.active).where(_clients.c.client_id == bindparam("client_id"))
_ACTIVE_CLIENTS = select(_clients.c.client_id).where(
    _clients.c.client_id.in_(bindparam("client_ids", expanding=True)), _clients.c.active
)


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def actor_rows(session: Session, usernames: Sequence[str]) -> list[Row[*tuple[Any, ...]]]:
    """Per user of `usernames`: one row per training record (or one with null training),
    with username, roles, facilities, volunteer, active, module, completed_on, expires_on;
    ordered by username, then training completion."""
    names = sorted(set(usernames))
    rows: list[Row[*tuple[Any, ...]]] = []
    for start in range(0, len(names), 500):
        rows += session.execute(_ACTOR_ROWS, {"names": names[start : start + 500]}).all()
    return rows


def list_users(session: Session, *, after: str | None, limit: int) -> list[User]:
    query = select(User).order_by(User.username).limit(limit)
    if after is not None:
        query = query.where(User.username > after)
    return list(session.scalars(query))


def any_user(session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None


def add(session: Session, row: User | Training | Client) -> None:
    session.add(row)
    session.flush()


def client_by_client_id(session: Session, client_id: str) -> Client | None:
    return session.scalar(select(Client).where(Client.client_id == client_id))


def client_is_active(session: Session, client_id: str) -> bool | None:
    """Whether the client is active; None when there is no such client."""
    active: bool | None = session.scalar(_CLIENT_ACTIVE, {"client_id": client_id})
    return active


def active_clients(session: Session, client_ids: Iterable[str]) -> set[str]:
    """Which of `client_ids` are registered and active (one query)."""
    wanted = sorted(set(client_ids))
    if not wanted:
        return set()
    return set(session.scalars(_ACTIVE_CLIENTS, {"client_ids": wanted}))


def list_clients(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.name, Client.client_id)))
