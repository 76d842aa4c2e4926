"""The rules for users, training and clients; every change is an `admin` audit event."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.auth.passwords import SecretHasher
from app.auth.principal import Principal
from app.clock import Clock
from app.errors import Conflict, Invalid, NotFound
from app.ledger.service import Ledger, NewEvent
from app.pagination import Cursors, str_key
from app.policy.book import PolicyBook
from app.policy.evaluator import CompiledPolicy
from app.users import repository
from app.users.models import Client, Training, User
from app.users.schemas import ClientCreate, TrainingCreate, UserCreate, UserUpdate
from app.vocabulary import SERVICE_ROLES, Kind, Role

OVERSIGHT_ROLES = frozenset({Role.auditor.value, Role.oversight.value})


def check_roles(policy: CompiledPolicy, roles: list[str], loc: str = "roles") -> list[str]:
    """Known roles only, and separation of duties; returns the roles de-duplicated."""
    for i, role in enumerate(roles):
        if role not in SERVICE_ROLES and role not in policy.mission_roles:
            raise Invalid(["body", loc, i], f"unknown role {role!r}")
    held = set(roles)
    if Role.integration.value in held and len(held) > 1:
        # A machine's role: whoever holds it beside a human role (admin included) could
        # ask for decisions, or report accesses, as the system and as a person at once.
        raise Invalid(
            ["body", loc],
            "separation of duties: integration is a machine role and cannot be combined"
            " with any other role",
        )
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


class Users:
    """Users, training records and clients; every change is an `admin` event naming who."""

    @property
    def policy(self) -> CompiledPolicy:
        """The version in force now (as of the book's last refresh)."""
        return self.book.at(self.clock())

    def __init__(
        self,
        book: PolicyBook,
        ledger: Ledger,
        hasher: SecretHasher,
        clock: Clock,
        cursors: Cursors,
    ) -> None:
        self.book = book
        self.ledger = ledger
        self.hasher = hasher
        self.clock = clock
        self.cursors = cursors

    def get_user_or_none(self, session: Session, username: str) -> User | None:
        return repository.user_by_username(session, username)

    def get_user(self, session: Session, username: str) -> User:
        user = repository.user_by_username(session, username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    def list_users(
        self, session: Session, *, cursor: str | None, limit: int
    ) -> tuple[list[User], str | None]:
        """A page of users in username order, and the cursor of the next page."""
        query = {"limit": limit}
        after = str_key(self.cursors.decode("users", query, cursor))
        rows = repository.list_users(session, after=after, limit=limit + 1)
        return self.cursors.page(rows, limit, "users", query, lambda user: user.username)

    def create_user(
        self, session: Session, by: Principal | None, body: UserCreate, source_ip: str | None = None
    ) -> User:
        """Create a user (`by` is None when the CLI bootstraps the first admin)."""
        self.book.refresh(session)
        roles = check_roles(self.policy, body.roles)
        facilities = check_facilities(self.policy, body.facilities)
        if repository.user_by_username(session, body.username) is not None:
            raise Conflict(f"username {body.username!r} is taken")
        now = self.clock()
        user = User(
            username=body.username,
            full_name=body.full_name,
            roles=roles,
            facilities=facilities,
            volunteer=body.volunteer,
            active=True,
            password_hash=self.hasher.hash(body.password) if body.password else None,
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
        self._record(session, by, "create_user", "user", user.username, changes, source_ip)
        return user

    def update_user(
        self,
        session: Session,
        by: Principal,
        username: str,
        body: UserUpdate,
        source_ip: str | None = None,
    ) -> User:
        self.book.refresh(session)
        user = self.get_user(session, username)
        changes: dict[str, Any] = {}
        # Whether every earlier token of the user must end (`User.credential_version`).
        ends_tokens = False
        if body.roles is not None:
            roles = check_roles(self.policy, body.roles)
            admin = Role.admin.value
            if by.name == user.username and admin in user.roles and admin not in roles:
                raise Invalid(
                    ["body", "roles"], "an administrator cannot remove their own admin role"
                )
            changes["roles"] = {"from": list(user.roles), "to": roles}
            ends_tokens |= not set(user.roles) <= set(roles)  # a role taken away
            user.roles = roles
        if body.facilities is not None:
            facilities = check_facilities(self.policy, body.facilities)
            changes["facilities"] = {"from": list(user.facilities), "to": facilities}
            user.facilities = facilities
        for name in ("full_name", "volunteer", "active"):
            value = getattr(body, name)
            if value is not None and value != getattr(user, name):
                if name == "active" and not value and by.name == user.username:
                    raise Invalid(
                        ["body", "active"], "an administrator cannot deactivate themselves"
                    )
                changes[name] = {"from": getattr(user, name), "to": value}
                setattr(user, name, value)
                # deactivated or reactivated: no token from before either survives it
                ends_tokens |= name == "active"
        if body.password is not None:
            user.password_hash = self.hasher.hash(body.password)
            user.failed_logins = 0
            user.locked_until = None
            changes["password"] = "changed"
            ends_tokens = True
        if not changes:
            return user
        if ends_tokens:
            # In SQL, not read-modify-write: a concurrent change must not undo this bump.
            user.credential_version = User.credential_version + 1
        user.updated_at = self.clock()
        session.flush()
        self._record(session, by, "update_user", "user", user.username, changes, source_ip)
        return user

    def add_training(
        self,
        session: Session,
        by: Principal,
        username: str,
        body: TrainingCreate,
        source_ip: str | None = None,
    ) -> Training:
        self.book.refresh(session)
        user = self.get_user(session, username)
        policy = self.policy
        if body.module not in policy.training_validity_days:
            raise Invalid(["body", "module"], f"unknown training module {body.module!r}")
        now = self.clock()
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
        changes = {
            "module": record.module,
            "completed_on": record.completed_on.isoformat(),
            "expires_on": record.expires_on.isoformat(),
        }
        self._record(session, by, "add_training", "user", user.username, changes, source_ip)
        return record

    def create_client(
        self,
        session: Session,
        by: Principal | None,
        body: ClientCreate,
        source_ip: str | None = None,
    ) -> tuple[Client, str]:
        """Register an integrating app; returns the client and its secret (shown once)."""
        secret = secrets.token_urlsafe(32)
        client = Client(
            client_id="cli_" + secrets.token_hex(8),
            name=body.name,
            secret_hash=self.hasher.hash(secret),
            active=True,
            failed_logins=0,
            created_at=self.clock(),
        )
        repository.add(session, client)
        changes = {"name": client.name}
        self._record(session, by, "create_client", "client", client.client_id, changes, source_ip)
        return client, secret

    def set_client_active(
        self,
        session: Session,
        by: Principal,
        client_id: str,
        active: bool,
        source_ip: str | None = None,
    ) -> Client:
        client = repository.client_by_client_id(session, client_id)
        if client is None:
            raise NotFound(f"no client {client_id!r}")
        if client.active != active:
            changes = {"active": {"from": client.active, "to": active}}
            self._record(
                session, by, "update_client", "client", client.client_id, changes, source_ip
            )
            client.active = active
            session.flush()
        return client

    def list_clients(self, session: Session) -> list[Client]:
        return repository.list_clients(session)

    def any_user(self, session: Session) -> bool:
        return repository.any_user(session)

    def _record(
        self,
        session: Session,
        by: Principal | None,
        action: str,
        record_type: str,
        record_id: str,
        changes: dict[str, Any],
        source_ip: str | None,
    ) -> None:
        """Append the admin event naming who changed what (never a secret)."""
        actor = by.name if by else "system"
        now = self.clock()
        event = NewEvent(
            kind=Kind.admin.value,
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
        self.ledger.append(session, now, [event])
