"""Every query on users, training records and clients."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from operator import itemgetter
from typing import Final

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.policy.evaluator import ActorProfile, TrainingRecord
from app.users.models import Client, Training, User

_users = User.__table__
_training = Training.__table__
_clients = Client.__table__
# Names per IN list: well under every database's limit on bound parameters.
CHUNK: Final = 500

# The access path's queries, built once (Core, no ORM objects): they run on every decision.
_ACTOR_ROWS = (
    select(
        _users.c.username, _users.c.roles, _users.c.facilities, _users.c.volunteer,
        _users.c.active, _training.c.module, _training.c.completed_on, _training.c.expires_on,
    )
    .outerjoin(_training, _training.c.user_id == _users.c.id)
    .where(_users.c.username.in_(bindparam("names", expanding=True)))
    .order_by(_users.c.username, _training.c.completed_on, _training.c.id)
)  # fmt: skip
_ACTIVE_CLIENTS = select(_clients.c.client_id).where(
    _clients.c.client_id.in_(bindparam("names", expanding=True)), _clients.c.active
)
_CLIENT_ACTIVE = select(_clients.c.active).where(_clients.c.client_id == bindparam("client_id"))


def _chunks(names: Iterable[str]) -> list[list[str]]:
    ordered = sorted(set(names))
    return [ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)]


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def actor_profiles(session: Session, usernames: Iterable[str]) -> dict[str, ActorProfile]:
    """The evaluator's view of each known user of `usernames` (no ORM objects)."""
    profiles: dict[str, ActorProfile] = {}
    for chunk in _chunks(usernames):
        rows = session.execute(_ACTOR_ROWS, {"names": chunk})
        for username, group in groupby(rows, key=itemgetter(0)):
            user = list(group)
            training: dict[str, list[TrainingRecord]] = {}
            for *_, module, completed_on, expires_on in user:
                if module is not None:
                    training.setdefault(module, []).append(
                        TrainingRecord(module, completed_on, expires_on)
                    )
            _, roles, facilities, volunteer, active, *_ = user[0]
            profiles[username] = ActorProfile(
                username=username,
                roles=tuple(roles),
                facilities=frozenset(facilities),
                volunteer=volunteer,
                active=active,
                training={module: tuple(records) for module, records in training.items()},
            )
    return profiles


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
