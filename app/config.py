"""Settings: environment variables with the AUDIT_ prefix (a `.env` file is read too).

Reading settings validates them and does nothing else: no file is read or written here.
Development keys, when none are configured, are made by an explicit start-up step
(`app.keys`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


class WitnessSetting(BaseModel):
    """A witness the log submits its checkpoints to: where, and its vkey (type 0x04)."""

    url: str = Field(pattern=r"^https?://[^\s]+$", examples=["http://witness.dps.example:8080"])
    vkey: str = Field(min_length=1, max_length=1024)


class Settings(BaseSettings):
    """Every knob the service reads; defaults are for local development."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./access_audit.db"
    policy_dir: Path = Path("./policies")
    # The `authority` recorded with the policy folder when it becomes the first version.
    policy_authority: str = Field(
        default="the mission policy as deployed (the policy folder at first start-up)",
        min_length=1,
    )
    secret_key: str | None = Field(default=None, min_length=32)
    token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    signing_key_file: Path | None = None
    jwt_algorithm: str = "HS256"
    lockout_threshold: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    # Logins: threads that check passwords (never the decision path's), token requests per
    # source address and window (per process), beyond which they get 429.
    login_hash_threads: int = Field(default=2, ge=1, le=64)
    login_rate_limit: int = Field(default=30, ge=1)
    login_rate_window_seconds: int = Field(default=60, ge=1, le=86_400)
    checkpoint_interval: int = Field(default=1000, ge=1, le=1000)
    # The verifiable log (contract section 13): its name in checkpoints (generated once per
    # database when unset), and how soon a checkpoint of the tree follows a commit.
    log_origin: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[^\s+]+$")
    checkpoint_seconds: float = Field(default=1.0, gt=0, le=3600)
    # Independent witnesses (`access-audit witness serve`), as a JSON list of {url, vkey}.
    witnesses: list[WitnessSetting] = Field(default_factory=list)
    witness_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Log keys (signed-note vkeys) that `verify` trusts for tree checkpoints and chain
    # checkpoints alike, whatever the database publishes; unset, the service's own key.
    trusted_log_keys: list[str] = Field(default_factory=list)
    # argon2 cost; production keeps the library's defaults, tests lower them for speed.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost: int = Field(default=65_536, ge=8)
    # How long an append waits for the ledger lock before failing (fail fast, never hang).
    ledger_lock_timeout_seconds: float = Field(default=10.0, gt=0)
    # The largest request body accepted; a larger one is 413 before it is parsed.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    # Folder for development-only generated files (keys, demo client); see `state_path`.
    state_dir: Path | None = None

    @property
    def state_path(self) -> Path:
        """Where development secrets are kept: AUDIT_STATE_DIR, beside a SQLite file, or here."""
        if self.state_dir is not None:
            return self.state_dir
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).resolve().parent
        return Path.cwd()
