"""Logins: verify, count failures, lock after too many, and record every attempt.

A password is checked outside any transaction, in a small thread pool of its own: argon2
takes tens of milliseconds and a lot of memory on purpose, and a flood of logins must
neither hold the database's locks nor take the threads that decisions run on. So a login
is three steps: reserve (a short transaction that locks the user's row), check the
password in the pool, and record (a short transaction that locks the row again, counts
the outcome and appends the `login` event). A reservation counts as a failure until it is
recorded: no more attempts are checked at once than the failures left before the lock, so
at most `lockout_threshold` failures are ever evaluated before it, on any number of
processes. A reservation left by a process that died lapses after the lockout period.

Integration clients are never locked (their secrets are long and random, and whoever knows
a client's id could otherwise lock it out); like users, they are rate-limited per source
address (`app.auth.ratelimit`), and the refusals are appended as one `rate_limited` login
event per address and window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import anyio
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.auth.passwords import SecretHasher
from app.auth.ratelimit import LoginRateLimit, Refusals
from app.auth.tokens import TokenService
from app.clock import Clock
from app.db import Database
from app.errors import TooManyRequests
from app.ledger.service import Ledger, NewEvent
from app.users import repository as users_repo
from app.vocabulary import ALLOW, DENY, Kind, Role

T = TypeVar("T")
log = logging.getLogger("access_audit")


@dataclass(slots=True)
class _Attempt:
    """One login between its steps: what the reservation found."""

    grant: str
    name: str
    stored: str | None = None  # the hash to check against; None: spend the time, fail
    outcome: str | None = None  # decided without checking the password
    reserved: bool = False  # a user's attempt counted in `logins_pending`
    version: int | None = None  # the user's credential version when reserved
    active: bool = False
    roles: list[str] = field(default_factory=list)


class Logins:
    """The token endpoint's rules: one login attempt, one `login` event."""

    def __init__(
        self,
        database: Database,
        ledger: Ledger,
        hasher: SecretHasher,
        tokens: TokenService,
        clock: Clock,
        *,
        lockout_threshold: int,
        lockout_minutes: int,
        hash_threads: int,
        rate_limit: LoginRateLimit,
    ) -> None:
        self.database = database
        self.ledger = ledger
        self.hasher = hasher
        self.tokens = tokens
        self.clock = clock
        self.lockout_threshold = lockout_threshold
        self.lockout = timedelta(minutes=lockout_minutes)
        self.rate_limit = rate_limit
        self._hashing = ThreadPoolExecutor(hash_threads, thread_name_prefix="login-hash")

    async def login(
        self, grant: str, name: str | None, secret: str | None, source_ip: str | None
    ) -> str | None:
        """Check credentials for a user (`password`) or client (`client_credentials`).

        Returns a token, or None for any failure; the caller answers every failure with the
        same 401 so that nobody learns which part was wrong. Every attempt that is admitted
        and names an account and a secret is appended (`kind: "login"`), the failure
        counter with it, before the answer. Too many requests from `source_ip`: 429.
        """
        now = self.clock()
        await self._report(self.rate_limit.finished(now.timestamp()))
        wait = self.rate_limit.admit(source_ip, now.timestamp())
        if wait is not None:
            raise TooManyRequests("too many token requests from this address", wait)
        if not name or not secret:
            return None
        attempt = await self._write(self._reserve, grant, name, now)
        # Once reserved, the attempt is checked and recorded even if its caller goes away:
        # a reservation that is never recorded would hold a failure until it lapses.
        with anyio.CancelScope(shield=True):
            valid = await asyncio.get_running_loop().run_in_executor(
                self._hashing, self.hasher.verify, secret, attempt.stored
            )
            token = await self._write(self._record, attempt, valid, source_ip)
        return token

    async def report_all(self) -> None:
        """Append every open report of refusals (at shutdown)."""
        reports = self.rate_limit.all_open()
        try:
            await self._report(reports)
        except Exception:
            # Shutting down with the log unavailable: say what could not be recorded.
            refused = {report.source_ip: report.count for report in reports}
            log.exception("token requests refused and not recorded: %s", refused)

    def close(self) -> None:
        self._hashing.shutdown(wait=False, cancel_futures=True)

    async def _write(self, work: Callable[..., T], *args: object) -> T:
        """`work(session, *args)` in a writer transaction of its own, committed."""
        async with self.database.write_turn():
            return await run_in_threadpool(self._committed, work, *args)

    def _committed(self, work: Callable[..., T], *args: object) -> T:
        with self.database.writer() as session:
            result = work(session, *args)
            session.commit()
        return result

    def _reserve(self, session: Session, grant: str, name: str, now: datetime) -> _Attempt:
        """Find the account and decide whether its password may be checked now."""
        attempt = _Attempt(grant, name)
        if grant != "password":
            client = users_repo.client_by_client_id(session, name)
            if client is None:
                attempt.outcome = "unknown"
            else:
                attempt.stored, attempt.active = client.secret_hash, client.active
                attempt.roles = [Role.integration.value]
            return attempt
        user = users_repo.user_for_login(session, name)
        if user is None:
            attempt.outcome = "unknown"
            return attempt
        attempt.roles = list(user.roles)
        if user.locked_until is not None and user.locked_until > now:
            attempt.outcome = "locked"
            return attempt
        if user.logins_pending_until is None or user.logins_pending_until <= now:
            user.logins_pending = 0  # what is left lapsed: its process died
        if user.failed_logins + user.logins_pending >= self.lockout_threshold:
            # As many attempts are being checked as would lock the account if they fail.
            attempt.outcome = "lock_pending"
            return attempt
        user.logins_pending += 1
        user.logins_pending_until = now + self.lockout
        attempt.stored, attempt.active = user.password_hash, user.active
        attempt.reserved, attempt.version = True, user.credential_version
        return attempt

    def _record(
        self, session: Session, attempt: _Attempt, valid: bool, source_ip: str | None
    ) -> str | None:
        """Count the outcome, append the `login` event; the token if it is a success."""
        now = self.clock()
        outcome = attempt.outcome
        version = attempt.version
        if attempt.reserved:
            user = users_repo.user_for_login(session, attempt.name)
            if user is None:  # users are never deleted; kept for the type checker
                raise LookupError(attempt.name)
            user.logins_pending = max(0, user.logins_pending - 1)
            attempt.roles, attempt.active = list(user.roles), user.active
            if user.credential_version != attempt.version:
                outcome = "credential_changed"  # checked against a password now replaced
            elif not valid:
                user.failed_logins += 1
                outcome = "bad_credentials"
                if user.failed_logins >= self.lockout_threshold:
                    user.locked_until = now + self.lockout
                    user.failed_logins = 0
                    outcome = "bad_credentials_locked"
            elif attempt.active:
                user.failed_logins = 0
                user.locked_until = None
        if outcome is None:
            if not valid:
                outcome = "bad_credentials"
            elif not attempt.active:
                outcome = "inactive"
            else:
                outcome = "success"
        self.ledger.append(session, now, [self._event(attempt, outcome, source_ip, now)])
        session.flush()
        if outcome != "success":
            return None
        kind = "user" if attempt.grant == "password" else "client"
        return self.tokens.issue(attempt.name, kind, version)

    def _event(
        self, attempt: _Attempt, outcome: str, source_ip: str | None, now: datetime
    ) -> NewEvent:
        return NewEvent(
            kind=Kind.login.value,
            occurred_at=now,
            actor=attempt.name[:128],
            actor_roles=attempt.roles,
            action="login",
            decision=ALLOW if outcome == "success" else DENY,
            source=attempt.name[:128],
            source_ip=source_ip,
            details={"grant": attempt.grant, "outcome": outcome},
        )

    async def _report(self, reports: list[Refusals]) -> None:
        if reports:
            await self._write(self._append_refusals, reports)

    def _append_refusals(self, session: Session, reports: list[Refusals]) -> None:
        now = self.clock()

        def at(seconds: float) -> str:
            return datetime.fromtimestamp(seconds, UTC).isoformat()

        events = [
            NewEvent(
                kind=Kind.login.value,
                occurred_at=datetime.fromtimestamp(report.first, UTC),
                action="login",
                decision=DENY,
                source="token endpoint",
                source_ip=report.source_ip,
                details={
                    "outcome": "rate_limited",
                    "count": report.count,
                    "first": at(report.first),
                    "last": at(report.last),
                    "window_seconds": self.rate_limit.window,
                },
            )
            for report in reports
        ]
        self.ledger.append(session, now, events)
        session.flush()
