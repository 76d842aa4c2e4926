"""Logins: verify, count failures, lock after too many, and record every attempt."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.service import NewEvent
from app.users import repository as users_repo
from app.users.models import Client, User


def login(
    session: Session,
    context: AppContext,
    grant: str,
    name: str,
    secret: str,
    source_ip: str | None,
) -> str | None:
    """Check credentials for a user (`password`) or client (`client_credentials`).

    Returns a token, or None for any failure; the caller answers every failure with the
    same 401 so that nobody learns which part was wrong. Every attempt is appended
    (`kind: "login"`) in this transaction, the failure counter with it.
    """
    now = context.clock()
    account: User | Client | None
    if grant == "password":
        account = users_repo.user_by_username(session, name)
        stored = account.password_hash if account else None
    else:
        account = users_repo.client_by_client_id(session, name)
        stored = account.secret_hash if account else None

    if account is not None and account.locked_until is not None and account.locked_until > now:
        context.hasher.verify(secret, None)  # same cost as a real check
        outcome = "locked"
    elif not context.hasher.verify(secret, stored):
        outcome = "unknown" if account is None else "bad_credentials"
        if account is not None:
            account.failed_logins += 1
            if account.failed_logins >= context.settings.lockout_threshold:
                account.locked_until = now + timedelta(minutes=context.settings.lockout_minutes)
                account.failed_logins = 0
                outcome = "bad_credentials_locked"
    elif account is None or not account.active:
        outcome = "inactive"
    else:
        account.failed_logins = 0
        account.locked_until = None
        outcome = "success"

    roles: list[str] = []
    if isinstance(account, User):
        roles = list(account.roles)
    elif account is not None:
        roles = ["integration"]
    context.ledger.append(
        session,
        now,
        [
            NewEvent(
                kind="login",
                occurred_at=now,
                actor=name[:128],
                actor_roles=roles,
                action="login",
                decision="allow" if outcome == "success" else "deny",
                source=name[:128],
                source_ip=source_ip,
                details={"grant": grant, "outcome": outcome},
            )
        ],
    )
    session.flush()
    if outcome != "success" or account is None:
        return None
    kind = "user" if isinstance(account, User) else "client"
    return context.tokens.issue(name, kind, now)
