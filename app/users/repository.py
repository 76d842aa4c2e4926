"""Every query on users, training records and clients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Select, Text, any_, bindparam, select
from sqlalchemy.orm import Session

from app.db import Read, is_sqlite
from app.users.models import Client, Training, User

_users = User.__table__
_training = Training.__table__
_clients = Client.__table__

# The access path's queries, built once (Core, no ORM objects): they run on every decision.
_ACTOR_COLUMNS = (
    _users.c.username, _users.c.roles, _users.c.facilities, _users.c.volunteer, _users.c.active,
    _training.c.module, _training.c.completed_on, _training.c.expires_on,
)  # fmt: skip


def _actor_rows(named: ColumnElement[bool]) -> Select[Any]:
    return (
        select(*_ACTOR_COLUMNS)
        .outerjoin(_training, _training.c.user_id == _users.c.id)
        .where(named)
        .order_by(_users.c.username, _training.c.completed_on, _training.c.id)
    )


def _active_clients(named: ColumnElement[bool]) -> Select[Any]:
    return select(_clients.c.client_id).where(named, _clients.c.active)


# The names as an IN list; on PostgreSQL as one array (`db.read_together` sends it in a
# pipeline, which takes no IN list, and the statement text stays the same for any count).
_ACTOR_ROWS = _actor_rows(_users.c.username.in_(bindparam("names", expanding=True)))
_PG_ACTOR_ROWS = _actor_rows(_users.c.username == any_(bindparam("names", type_=ARRAY(Text))))
_ACTIVE_CLIENTS = _active_clients(_clients.c.client_id.in_(bindparam("names", expanding=True)))
_PG_ACTIVE_CLIENTS = _active_clients(
    _clients.c.client_id == any_(bindparam("names", type_=ARRAY(Text)))
)
_CLIENT_ACTIVE = select(_clients.c.active).where(_clients.c.client_id == bindparam("client_id"))


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def actor_reads(session: Session, usernames: Iterable[str]) -> list[Read]:
    """Reads of the users of `usernames` (`db.read_together`): one row per training record
    (or one with null training), with username, roles, facilities, volunteer, active,
    module, completed_on, expires_on; ordered by username, then training completion."""
    return _by_names(session, usernames, _ACTOR_ROWS, _PG_ACTOR_ROWS)


def active_client_reads(session: Session, client_ids: Iterable[str]) -> list[Read]:
    """Reads of which of `client_ids` are registered and active, one client_id per row."""
    return _by_names(session, client_ids, _ACTIVE_CLIENTS, _PG_ACTIVE_CLIENTS)


def _by_names(
    session: Session, names: Iterable[str], listed: Select[Any], pg_array: Select[Any]
) -> list[Read]:
    ordered = sorted(set(names))
    if not ordered:
        return []
    if is_sqlite(session):
        return [(listed, {"names": ordered[i : i + 500]}) for i in range(0, len(ordered), 500)]
    return [(pg_array, {"names": ordered})]


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


def list_clients(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.name, Client.client_id)))
