"""The rules for users, training and clients; every change is an `admin` audit event."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy.orm import Session

from app.auth.roles import SERVICE_ROLES, Role
from app.context import AppContext
from app.db import read_together
from app.deps import Principal
from app.errors import Conflict, Invalid, NotFound
from app.ledger.service import NewEvent
from app.policy.evaluator import ActorProfile, CompiledPolicy, TrainingRecord
from app.users import repository
from app.users.models import Client, Training, User
from app.users.schemas import ClientCreate, TrainingCreate, UserCreate, UserUpdate

OVERSIGHT_ROLES = frozenset({Role.auditor.value, Role.oversight.value})


def check_roles(policy: CompiledPolicy, roles: list[str], loc: str = "roles") -> list[str]:
    """Known roles only, and separation of duties; returns the roles de-duplicated."""
    for i, role in enumerate(roles):
        if role not in SERVICE_ROLES and role not in policy.mission_roles:
            raise Invalid(["body", loc, i], f"unknown role {role!r}")
    held = set(roles)
    if Role.admin.value in held and held & OVERSIGHT_ROLES:
        raise Invalid(
            ["body", loc], "separation of duties: admin cannot also be auditor or oversight"
        )
    if held & policy.guard_roles and held & (policy.mission_roles - policy.guard_roles):
        raise Invalid(
            ["body", loc],
            "separation of duties: a Guard role cannot be held together with a sworn-officer role",
        )
    return sorted(held, key=roles.index)


def check_facilities(policy: CompiledPolicy, facilities: list[str]) -> list[str]:
    for i, facility in enumerate(facilities):
        if facility not in policy.facilities:
            raise Invalid(["body", "facilities", i], f"unknown facility {facility!r}")
    return sorted(set(facilities), key=facilities.index)


def get_user_or_none(session: Session, username: str) -> User | None:
    return repository.user_by_username(session, username)


def get_user(session: Session, username: str) -> User:
    user = repository.user_by_username(session, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def list_users(session: Session, *, after: str | None, limit: int) -> tuple[list[User], str | None]:
    users = repository.list_users(session, after=after, limit=limit + 1)
    more = len(users) > limit
    users = users[:limit]
    return users, (users[-1].username if more and users else None)


def create_user(
    session: Session,
    context: AppContext,
    by: Principal | None,
    body: UserCreate,
    source_ip: str | None = None,
) -> User:
    """Create a user (`by` is None when the CLI bootstraps the first admin)."""
    roles = check_roles(context.policy, body.roles)
    facilities = check_facilities(context.policy, body.facilities)
    if repository.user_by_username(session, body.username) is not None:
        raise Conflict(f"username {body.username!r} is taken")
    now = context.clock()
    user = User(
        username=body.username,
        full_name=body.full_name,
        roles=roles,
        facilities=facilities,
        volunteer=body.volunteer,
        active=True,
        password_hash=context.hasher.hash(body.password) if body.password else None,
        failed_logins=0,
        created_at=now,
        updated_at=now,
    )
    repository.add(session, user)
    changes: dict[str, Any] = {
        "full_name": user.full_name,
        "roles": roles,
        "facilities": facilities,
        "volunteer": user.volunteer,
        "password": "set" if body.password else None,
    }
    _record(session, context, by, "create_user", "user", user.username, changes, source_ip)
    return user


def update_user(
    session: Session,
    context: AppContext,
    by: Principal,
    username: str,
    body: UserUpdate,
    source_ip: str | None = None,
) -> User:
    user = get_user(session, username)
    changes: dict[str, Any] = {}
    if body.roles is not None:
        roles = check_roles(context.policy, body.roles)
        admin = Role.admin.value
        if by.name == user.username and admin in user.roles and admin not in roles:
            raise Invalid(["body", "roles"], "an administrator cannot remove their own admin role")
        changes["roles"] = {"from": list(user.roles), "to": roles}
        user.roles = roles
    if body.facilities is not None:
        facilities = check_facilities(context.policy, body.facilities)
        changes["facilities"] = {"from": list(user.facilities), "to": facilities}
        user.facilities = facilities
    for name in ("full_name", "volunteer", "active"):
        value = getattr(body, name)
        if value is not None and value != getattr(user, name):
            if name == "active" and not value and by.name == user.username:
                raise Invalid(["body", "active"], "an administrator cannot deactivate themselves")
            changes[name] = {"from": getattr(user, name), "to": value}
            setattr(user, name, value)
    if body.password is not None:
        user.password_hash = context.hasher.hash(body.password)
        user.failed_logins = 0
        user.locked_until = None
        changes["password"] = "changed"
    if not changes:
        return user
    user.updated_at = context.clock()
    session.flush()
    _record(session, context, by, "update_user", "user", user.username, changes, source_ip)
    return user


def add_training(
    session: Session,
    context: AppContext,
    by: Principal,
    username: str,
    body: TrainingCreate,
    source_ip: str | None = None,
) -> Training:
    user = get_user(session, username)
    policy = context.policy
    if body.module not in policy.training_validity_days:
        raise Invalid(["body", "module"], f"unknown training module {body.module!r}")
    now = context.clock()
    if body.completed_on > policy.local_date(now) + timedelta(days=1):
        raise Invalid(["body", "completed_on"], "completed_on is in the future")
    expires_on = body.expires_on or policy.training_expiry(body.module, body.completed_on)
    if expires_on < body.completed_on:
        raise Invalid(["body", "expires_on"], "expires_on is before completed_on")
    record = Training(
        user_id=user.id,
        module=body.module,
        completed_on=body.completed_on,
        expires_on=expires_on,
        recorded_at=now,
        recorded_by=by.name,
    )
    repository.add(session, record)
    session.refresh(user, ["training"])
    _record(
        session,
        context,
        by,
        "add_training",
        "user",
        user.username,
        {
            "module": record.module,
            "completed_on": record.completed_on.isoformat(),
            "expires_on": record.expires_on.isoformat(),
        },
        source_ip,
    )
    return record


def create_client(
    session: Session,
    context: AppContext,
    by: Principal | None,
    body: ClientCreate,
    source_ip: str | None = None,
) -> tuple[Client, str]:
    """Register an integrating app; returns the client and its secret (shown once)."""
    secret = secrets.token_urlsafe(32)
    client = Client(
        client_id="cli_" + secrets.token_hex(8),
        name=body.name,
        secret_hash=context.hasher.hash(secret),
        active=True,
        failed_logins=0,
        created_at=context.clock(),
    )
    repository.add(session, client)
    _record(
        session,
        context,
        by,
        "create_client",
        "client",
        client.client_id,
        {"name": client.name},
        source_ip,
    )
    return client, secret


def set_client_active(
    session: Session,
    context: AppContext,
    by: Principal,
    client_id: str,
    active: bool,
    source_ip: str | None = None,
) -> Client:
    client = repository.client_by_client_id(session, client_id)
    if client is None:
        raise NotFound(f"no client {client_id!r}")
    if client.active != active:
        _record(
            session,
            context,
            by,
            "update_client",
            "client",
            client.client_id,
            {"active": {"from": client.active, "to": active}},
            source_ip,
        )
        client.active = active
        session.flush()
    return client


def _record(
    session: Session,
    context: AppContext,
    by: Principal | None,
    action: str,
    record_type: str,
    record_id: str,
    changes: dict[str, Any],
    source_ip: str | None,
) -> None:
    """Append the admin event naming who changed what (never a secret)."""
    actor = by.name if by else "system"
    now = context.clock()
    context.ledger.append(
        session,
        now,
        [
            NewEvent(
                kind="admin",
                actor=actor,
                actor_roles=sorted(by.roles) if by else [],
                action=action,
                record_type=record_type,
                record_id=record_id,
                source=actor if by else "cli",
                source_ip=source_ip,
                occurred_at=now,
                details={"changes": changes},
            )
        ],
    )


def actor_profiles(session: Session, usernames: Iterable[str]) -> dict[str, ActorProfile]:
    """The evaluator's view of each known user of `usernames` (one query, no ORM objects)."""
    return profiles_from_rows(
        row for rows in read_together(session, repository.actor_reads(session, usernames))
        for row in rows
    )  # fmt: skip


def profiles_from_rows(rows: Iterable[tuple[Any, ...]]) -> dict[str, ActorProfile]:
    """Actor profiles from the rows of `repository.actor_reads`, in their order."""
    profiles: dict[str, ActorProfile] = {}
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


def any_user(session: Session) -> bool:
    return repository.any_user(session)


def list_clients(session: Session) -> list[Client]:
    return repository.list_clients(session)
