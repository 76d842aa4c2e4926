"""The service's keys: the JWT secret and the Ed25519 checkpoint key (start-up step).

Production configures both (`AUDIT_SECRET_KEY`, `AUDIT_SIGNING_KEY_FILE`). When one is not
configured, `service_keys` makes a development key once and keeps it in the state folder
(readable by the service's user only), saying loudly that it did.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.ledger.signing import Signer

log = logging.getLogger("access_audit")

SECRET_FILE = ".access_audit_secret_key"
SIGNING_KEY_FILE = ".access_audit_signing_key.pem"


@dataclass(frozen=True)
class ServiceKeys:
    jwt_secret: str
    signer: Signer


def service_keys(settings: Settings) -> ServiceKeys:
    """The configured keys, or development keys made once beside the database."""
    return ServiceKeys(_jwt_secret(settings), _signer(settings))


def _jwt_secret(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = settings.state_path / SECRET_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(48).encode())
    log.warning(
        "AUDIT_SECRET_KEY is not set: using the development key in %s "
        "(set AUDIT_SECRET_KEY in production)",
        path,
    )
    return path.read_text().strip()


def _signer(settings: Settings) -> Signer:
    path = settings.signing_key_file
    if path is None:
        path = settings.state_path / SIGNING_KEY_FILE
        log.warning(
            "AUDIT_SIGNING_KEY_FILE is not set: using the development key %s "
            "(set AUDIT_SIGNING_KEY_FILE in production)",
            path,
        )
    if not path.exists():
        _write_private(path, Signer.new_key_pem())
        log.warning("created a new checkpoint signing key at %s", path)
    return Signer.from_pem_file(path)


def _write_private(path: Path, content: bytes) -> None:
    """Create `path` with `content`, readable by this user only from its first byte.

    Written beside it and linked into place, so a worker starting at the same moment
    finds either no file or the whole one; the first link wins, the others keep it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(content)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
    finally:
        draft.unlink(missing_ok=True)
