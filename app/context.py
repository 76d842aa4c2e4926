"""What a running service holds: settings, database, compiled policy, ledger, keys, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.auth.passwords import SecretHasher
from app.auth.tokens import TokenService
from app.config import Settings
from app.db import make_engine, session_factories
from app.ledger.service import Ledger, utcnow
from app.ledger.signing import Signer
from app.policy.evaluator import CompiledPolicy
from app.policy.loader import load_policy


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    reader: sessionmaker[Session]
    writer: sessionmaker[Session]
    policy: CompiledPolicy
    ledger: Ledger
    hasher: SecretHasher
    tokens: TokenService
    clock: Callable[[], datetime] = utcnow


def build_context(settings: Settings, engine: Engine | None = None) -> AppContext:
    """Everything the service needs, built once at start-up; a bad policy stops it here."""
    engine = engine or make_engine(settings.database_url, settings.ledger_lock_timeout_seconds)
    reader, writer = session_factories(engine)
    signer = Signer.load_or_create(settings.signing_key_path)
    return AppContext(
        settings=settings,
        engine=engine,
        reader=reader,
        writer=writer,
        policy=load_policy(settings.policy_dir),
        ledger=Ledger(signer, settings.checkpoint_interval, settings.ledger_lock_timeout_seconds),
        hasher=SecretHasher(settings.argon2_time_cost, settings.argon2_memory_cost),
        tokens=TokenService(
            settings.jwt_secret, settings.jwt_algorithm, settings.token_ttl_seconds
        ),
    )
