"""Every query on users, training records and clients."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.users.models import Client, Training, User


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def users_by_usernames(session: Session, usernames: Sequence[str]) -> dict[str, User]:
    found: dict[str, User] = {}
    names = sorted(set(usernames))
    for start in range(0, len(names), 500):
        rows = session.scalars(select(User).where(User.username.in_(names[start : start + 500])))
        found.update((u.username, u) for u in rows)
    return found


def list_users(session: Session, *, after: str | None, limit: int) -> list[User]:
    query = select(User).order_by(User.username).limit(limit)
    if after is not None:
        query = query.where(User.username > after)
    return list(session.scalars(query))


def active_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).where(User.active).order_by(User.username)))


def add(session: Session, row: User | Training | Client) -> None:
    session.add(row)
    session.flush()


def client_by_client_id(session: Session, client_id: str) -> Client | None:
    return session.scalar(select(Client).where(Client.client_id == client_id))


def list_clients(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.name, Client.client_id)))
