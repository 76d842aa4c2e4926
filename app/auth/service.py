"""Logins: verify, count failures, lock after too many, and record every attempt."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from app.auth.passwords import SecretHasher
from app.auth.tokens import TokenService
from app.clock import Clock
from app.ledger.service import Ledger, NewEvent
from app.users import repository as users_repo
from app.users.models import Client, User
from app.vocabulary import ALLOW, DENY, Kind, Role


class Logins:
    """The token endpoint's rules: one login attempt, one `login` event."""

    def __init__(
        self,
        ledger: Ledger,
        hasher: SecretHasher,
        tokens: TokenService,
        clock: Clock,
        *,
        lockout_threshold: int,
        lockout_minutes: int,
    ) -> None:
        self.ledger = ledger
        self.hasher = hasher
        self.tokens = tokens
        self.clock = clock
        self.lockout_threshold = lockout_threshold
        self.lockout = timedelta(minutes=lockout_minutes)

    def login(
        self, session: Session, grant: str, name: str, secret: str, source_ip: str | None
    ) -> str | None:
        """Check credentials for a user (`password`) or client (`client_credentials`).

        Returns a token, or None for any failure; the caller answers every failure with the
        same 401 so that nobody learns which part was wrong. Every attempt is appended
        (`kind: "login"`) in this transaction, the failure counter with it.
        """
        now = self.clock()
        account: User | Client | None
        if grant == "password":
            account = users_repo.user_by_username(session, name)
            stored = account.password_hash if account else None
        else:
            account = users_repo.client_by_client_id(session, name)
            stored = account.secret_hash if account else None

        if account is not None and account.locked_until is not None and account.locked_until > now:
            self.hasher.verify(secret, None)  # same cost as a real check
            outcome = "locked"
        elif not self.hasher.verify(secret, stored):
            outcome = "unknown" if account is None else "bad_credentials"
            if account is not None:
                account.failed_logins += 1
                if account.failed_logins >= self.lockout_threshold:
                    account.locked_until = now + self.lockout
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
            roles = [Role.integration.value]
        attempt = NewEvent(
            kind=Kind.login.value,
            occurred_at=now,
            actor=name[:128],
            actor_roles=roles,
            action="login",
            decision=ALLOW if outcome == "success" else DENY,
            source=name[:128],
            source_ip=source_ip,
            details={"grant": grant, "outcome": outcome},
        )
        self.ledger.append(session, now, [attempt])
        session.flush()
        if outcome != "success" or account is None:
            return None
        return self.tokens.issue(name, "user" if isinstance(account, User) else "client")
