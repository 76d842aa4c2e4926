"""Settings: environment variables with the AUDIT_ prefix (a `.env` file is read too)."""

from __future__ import annotations

import logging
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

log = logging.getLogger("access_audit")


class Settings(BaseSettings):
    """Every knob the service reads; defaults are for local development."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./access_audit.db"
    policy_dir: Path = Path("./policies")
    secret_key: str | None = None
    token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    signing_key_file: Path | None = None
    jwt_algorithm: str = "HS256"
    lockout_threshold: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    checkpoint_interval: int = Field(default=1000, ge=1, le=1000)
    # argon2 cost; production keeps the library's defaults, tests lower them for speed.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost: int = Field(default=65_536, ge=8)
    # How long an append waits for the ledger lock before failing (fail fast, never hang).
    ledger_lock_timeout_seconds: float = Field(default=10.0, gt=0)
    # Folder for development-only generated files (keys, demo client); see `state_path`.
    state_dir: Path | None = None

    @cached_property
    def state_path(self) -> Path:
        """Where development secrets are kept: AUDIT_STATE_DIR, beside a SQLite file, or here."""
        if self.state_dir is not None:
            return self.state_dir
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).resolve().parent
        return Path.cwd()

    @cached_property
    def jwt_secret(self) -> str:
        """The JWT signing secret: configured, or generated once and kept (dev only)."""
        if self.secret_key:
            if len(self.secret_key) < 32:
                raise SystemExit("AUDIT_SECRET_KEY must be at least 32 characters")
            return self.secret_key
        path = self.state_path / ".access_audit_secret_key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        log.warning(
            "AUDIT_SECRET_KEY is not set: using the development key in %s "
            "(set AUDIT_SECRET_KEY in production)",
            path,
        )
        return path.read_text().strip()

    @cached_property
    def signing_key_path(self) -> Path:
        """The Ed25519 checkpoint key file: configured, or generated beside the database (dev)."""
        if self.signing_key_file is not None:
            return self.signing_key_file
        path = self.state_path / ".access_audit_signing_key.pem"
        log.warning(
            "AUDIT_SIGNING_KEY_FILE is not set: using the development key %s "
            "(set AUDIT_SIGNING_KEY_FILE in production)",
            path,
        )
        return path
