"""The composition root: everything a running service holds, built once at start-up.

Nothing below this module imports it: services are handed what they use when they are
built here, and routes reach them through `app.deps`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request
from sqlalchemy import Engine

from app.access.queue import DecisionQueue
from app.access.service import Access
from app.auth.passwords import SecretHasher
from app.auth.ratelimit import LoginRateLimit
from app.auth.service import Logins
from app.auth.tokens import TokenService
from app.clock import Clock, utcnow
from app.config import Settings
from app.db import Database, make_engine
from app.keys import service_keys
from app.ledger import service as ledger_service
from app.ledger.append_store import store_for
from app.ledger.note import NoteError, Verifier
from app.ledger.service import Ledger, VolumeRule
from app.ledger.transparency import Publisher, TransparencyLog
from app.ledger.witnessing import Submitter, WitnessPeer
from app.pagination import Cursors
from app.policy.book import PolicyBook
from app.policy.evaluator import CompiledPolicy
from app.policy.loader import load_policy
from app.policy.service import Policies, PolicyMismatch
from app.reports.exports import Exports
from app.reports.publication import TransparencyReports
from app.reports.service import Reports
from app.users.service import Users


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    clock: Clock
    database: Database
    policy: CompiledPolicy  # the policy folder this process started with
    book: PolicyBook  # which version judges which instant (the log's history)
    policies: Policies
    ledger: Ledger
    transparency: TransparencyLog
    witnesses: tuple[WitnessPeer, ...]
    tokens: TokenService
    cursors: Cursors
    logins: Logins
    users: Users
    access: Access
    decisions: DecisionQueue
    reports: Reports
    exports: Exports
    publication: TransparencyReports

    def start(self) -> None:
        """The start-up step that needs the database (`ledger_service.start`), the policy
        folder recorded as the first version or checked against the log's, and the log's
        origin and first tree checkpoint."""
        with self.database.transaction() as session:
            ledger_service.start(session, self.ledger)
            try:
                self.policies.start(session)
            except PolicyMismatch as exc:
                raise SystemExit(f"error: {exc}") from None
            self.transparency.origin_for(session)
            self.transparency.publish(session)

    def publisher(self) -> Publisher:
        """The background signer of tree checkpoints (started by the served app)."""
        interval = self.settings.checkpoint_seconds
        return Publisher(self.database, self.transparency, interval)

    def background(self) -> list[Publisher | Submitter]:
        """What the served app runs beside the requests: the checkpoint publisher and one
        submitter per witness."""
        return [self.publisher(), *self.submitters()]

    def submitters(self) -> list[Submitter]:
        """One background submitter per witness (started by the served app)."""
        return [
            Submitter(
                self.database,
                peer,
                interval=self.settings.checkpoint_seconds,
                timeout=self.settings.witness_timeout_seconds,
                clock=utcnow,
            )
            for peer in self.witnesses
        ]

    async def stop(self) -> None:
        """The shutdown step that needs the database: the last refusals are reported."""
        await self.logins.report_all()

    def dispose(self) -> None:
        self.logins.close()
        self.database.dispose()


def build_context(
    settings: Settings,
    engine: Engine | None = None,
    *,
    database: Database | None = None,
    policy: CompiledPolicy | None = None,
    clock: Clock = utcnow,
    signing_clock: Clock = utcnow,
) -> AppContext:
    """Everything the service needs; a bad policy or key stops it here.

    `clock` is the service's time (decisions, records, tokens); `signing_clock` stamps
    checkpoints, which always say when they were really signed. The database (or the
    engine to build it on) and the compiled policy may be given, as tests do.
    """
    timeout = settings.ledger_lock_timeout_seconds
    if database is None:
        database = Database(engine or make_engine(settings.database_url, timeout), timeout)
    policy = policy or load_policy(settings.policy_dir)
    keys = service_keys(settings)
    try:
        witnesses = tuple(WitnessPeer.from_setting(w) for w in settings.witnesses)
    except NoteError as exc:
        raise SystemExit(f"AUDIT_WITNESSES: {exc}") from exc
    try:
        trusted = [Verifier.from_vkey(vkey) for vkey in settings.trusted_log_keys]
    except NoteError as exc:
        raise SystemExit(f"AUDIT_TRUSTED_LOG_KEYS: {exc}") from exc
    ledger = Ledger(
        store_for(database.engine),
        keys.signer,
        checkpoint_interval=settings.checkpoint_interval,
        lock_timeout=timeout,
        volume=VolumeRule(policy.volume_window, policy.volume_spike_records + 1),
        signing_clock=signing_clock,
    )
    hasher = SecretHasher(settings.argon2_time_cost, settings.argon2_memory_cost)
    tokens = TokenService(
        keys.jwt_secret, settings.jwt_algorithm, settings.token_ttl_seconds, clock
    )
    cursors = Cursors(keys.jwt_secret)
    book = PolicyBook(policy)
    access = Access(book, ledger, clock)
    transparency = TransparencyLog(
        keys.signer, settings.log_origin, signing_clock, trusted, appended=ledger.appended
    )
    reports = Reports(book, ledger, clock, cursors)
    exports = Exports(database, ledger, reports, clock, transparency)
    policies = Policies(
        book, ledger, clock, cursors,
        folder=settings.policy_dir, initial_authority=settings.policy_authority,
    )  # fmt: skip
    return AppContext(
        settings=settings,
        clock=clock,
        database=database,
        policy=policy,
        book=book,
        policies=policies,
        ledger=ledger,
        transparency=transparency,
        witnesses=witnesses,
        tokens=tokens,
        cursors=cursors,
        logins=Logins(
            database,
            ledger,
            hasher,
            tokens,
            clock,
            lockout_threshold=settings.lockout_threshold,
            lockout_minutes=settings.lockout_minutes,
            hash_threads=settings.login_hash_threads,
            rate_limit=LoginRateLimit(
                settings.login_rate_limit, settings.login_rate_window_seconds
            ),
        ),
        users=Users(book, ledger, hasher, clock, cursors),
        access=access,
        decisions=DecisionQueue(database, access),
        reports=reports,
        exports=exports,
        publication=TransparencyReports(book, reports, exports, ledger),
    )


def attach(app: FastAPI, context: AppContext) -> None:
    """Serve `context` from `app`: what the dependencies find on the app's state."""
    app.state.context = context
    app.state.database = context.database
    app.state.tokens = context.tokens


def context_of(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


async def context_dependency(request: Request) -> AppContext:
    """`context_of` as a route dependency. Async on purpose: FastAPI runs a plain function
    dependency in the threadpool, a hop there and back on every request for an attribute
    read."""
    return context_of(request)
