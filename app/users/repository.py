"""Every query on users, training records and clients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session, lazyload

from app.policy.evaluator import ActorProfile, TrainingRecord
from app.users.models import Client, Training, User

_users = User.__table__
_training = Training.__table__
_clients = Client.__table__
# Names per IN list: well under every database's limit on bound parameters.
CHUNK: Final = 500

# The access path's queries, built once (Core, no ORM objects): they run on every decision.
# Users and their training apart, so that each user's JSON columns are decoded once.
_ACTORS = select(
    _users.c.id, _users.c.username, _users.c.roles, _users.c.facilities, _users.c.volunteer,
    _users.c.active,
).where(_users.c.username.in_(bindparam("names", expanding=True)))  # fmt: skip
_TRAINING = (
    select(_training.c.user_id, _training.c.module, _training.c.completed_on,
           _training.c.expires_on)
    .where(_training.c.user_id.in_(bindparam("ids", expanding=True)))
    .order_by(_training.c.user_id, _training.c.completed_on, _training.c.id)
)  # fmt: skip
_ACTIVE_CLIENTS = select(_clients.c.client_id).where(
    _clients.c.client_id.in_(bindparam("names", expanding=True)), _clients.c.active
)
# Who a token names, read on every authenticated request: the columns that decide, not the
# ORM user (whose training list is loaded with it, a second query each time).
_SIGNED_IN = select(
    _users.c.username, _users.c.roles, _users.c.active,
    _users.c.password_hash.is_not(None).label("has_password"), _users.c.credential_version,
).where(_users.c.username == bindparam("username"))  # fmt: skip
_CLIENT_ACTIVE = select(_clients.c.active).where(_clients.c.client_id == bindparam("client_id"))


def _chunks(names: Iterable[str]) -> list[list[str]]:
    ordered = sorted(set(names))
    return [ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)]


def signed_in(session: Session, username: str) -> Row[Any] | None:
    """(username, roles, active, has_password, credential_version) of a user, or None."""
    return session.execute(_SIGNED_IN, {"username": username}).first()


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def user_for_login(session: Session, username: str) -> User | None:
    """The user row, locked until the transaction ends (PostgreSQL: `FOR UPDATE`; SQLite's
    writers already hold the database's write lock), so that logins to one account
    are counted one after another, by any number of processes."""
    return session.scalar(
        select(User)
        .where(User.username == username)
        .options(lazyload(User.training))
        .with_for_update(of=User.__table__)
    )


def actor_profiles(session: Session, usernames: Iterable[str]) -> dict[str, ActorProfile]:
    """The evaluator's view of each known user of `usernames` (no ORM objects)."""
    users = [
        row for chunk in _chunks(usernames) for row in session.execute(_ACTORS, {"names": chunk})
    ]
    training: dict[int, dict[str, list[TrainingRecord]]] = {}
    ids = [row.id for row in users]
    for start in range(0, len(ids), CHUNK):
        for user_id, module, completed_on, expires_on in session.execute(
            _TRAINING, {"ids": ids[start : start + CHUNK]}
        ):
            training.setdefault(user_id, {}).setdefault(module, []).append(
                TrainingRecord(module, completed_on, expires_on)
            )
    return {
        row.username: ActorProfile(
            username=row.username,
            roles=tuple(row.roles),
            facilities=frozenset(row.facilities),
            volunteer=row.volunteer,
            active=row.active,
            training={
                module: tuple(records) for module, records in training.get(row.id, {}).items()
            },
        )
        for row in users
    }


def active_clients(session: Session, client_ids: Iterable[str]) -> set[str]:
    """Which of `client_ids` are registered and active."""
    active: set[str] = set()
    for chunk in _chunks(client_ids):
        active.update(session.scalars(_ACTIVE_CLIENTS, {"names": chunk}))
    return active


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
