"""Ed25519 checkpoint signing: key loading, key ids, the signed byte layout."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.canonical import canonical_json
from app.ledger.canonical import format_timestamp

CHECKPOINT_PREFIX = "access-audit checkpoint v1"


def checkpoint_message(seq: int, hash_hex: str, signed_at: datetime | str, key_id: str) -> bytes:
    """The exact bytes a checkpoint signature covers (docs/integrity.md)."""
    stamp = signed_at if isinstance(signed_at, str) else format_timestamp(signed_at)
    return f"{CHECKPOINT_PREFIX}\n{seq}\n{hash_hex}\n{stamp}\n{key_id}\n".encode("ascii")


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(public_key_pem: str) -> Ed25519PublicKey | None:
    """The Ed25519 public key in a PEM text, or None when it is not one."""
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeError):
        return None
    return key if isinstance(key, Ed25519PublicKey) else None


def verify_signature(public_key_pem: str, message: bytes, signature_b64: str) -> bool:
    """True when `signature_b64` is a valid Ed25519 signature of `message`."""
    key = load_public_key(public_key_pem)
    return key is not None and signature_valid(key, message, signature_b64)


def signature_valid(key: Ed25519PublicKey, message: bytes, signature_b64: str) -> bool:
    """True when `signature_b64` (base64) is `key`'s Ed25519 signature of `message`."""
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def manifest_message(manifest: Mapping[str, Any]) -> bytes:
    """The bytes an export manifest's signature covers: canonical JSON without `signature`."""
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"}).encode()


@dataclass(frozen=True)
class Signer:
    """The service's current signing key."""

    private_key: Ed25519PrivateKey
    key_id: str
    public_key_pem: str

    @classmethod
    def from_key(cls, private_key: Ed25519PrivateKey) -> Signer:
        public = private_key.public_key()
        return cls(private_key, key_id_of(public), public_pem(public))

    @staticmethod
    def new_key_pem() -> bytes:
        """A new Ed25519 private key as unencrypted PKCS#8 PEM."""
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem_file(cls, path: Path) -> Signer:
        """The signer of the PEM private key at `path`; a file that is not one stops here."""
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise SystemExit(f"{path} is not an Ed25519 private key")
        return cls.from_key(loaded)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private_key.sign(message)).decode("ascii")


AUTHENTICATOR_CONTEXT = b"access-audit event authenticator v1"
AUTHENTICATOR_SIZE = 36  # the key's 4-byte tag, then HMAC-SHA256
_SHA256_BLOCK = 64


@dataclass(frozen=True)
class Authenticator:
    """Marks every leaf the service writes: the 4-byte tag of the signing key, then
    HMAC-SHA256(k, leaf hash) with k = HMAC-SHA256(the key's 32-byte private seed,
    AUTHENTICATOR_CONTEXT). The database holds neither key: a row inserted behind the
    service's back cannot carry a valid one (docs/integrity.md, "Authenticated events")."""

    tag: bytes
    key: bytes
    # HMAC's two padded-key states (RFC 2104), hashed once: a mark then costs two copies
    # and two short updates, 0.7 µs instead of `hmac.new`'s 1.4 (the append marks every
    # leaf, the checkpoint publisher checks every one).
    _inner: hashlib._Hash = field(init=False, repr=False, compare=False)
    _outer: hashlib._Hash = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) > _SHA256_BLOCK:
            raise ValueError("an authenticator key is at most one SHA-256 block")
        padded = self.key.ljust(_SHA256_BLOCK, b"\0")
        object.__setattr__(self, "_inner", hashlib.sha256(bytes(b ^ 0x36 for b in padded)))
        object.__setattr__(self, "_outer", hashlib.sha256(bytes(b ^ 0x5C for b in padded)))

    @classmethod
    def of(cls, private_key: Ed25519PrivateKey) -> Authenticator:
        seed = private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = private_key.public_key()
        return cls(
            bytes.fromhex(key_id_of(public))[:4],
            hmac.new(seed, AUTHENTICATOR_CONTEXT, hashlib.sha256).digest(),
        )

    def mark(self, leaf: bytes) -> bytes:
        """The tag, then HMAC-SHA256(key, leaf)."""
        inner = self._inner.copy()
        inner.update(leaf)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return self.tag + outer.digest()

    def check(
        self, leaf: bytes, stored: bytes | None, retired: frozenset[bytes] = frozenset()
    ) -> str | None:
        """None when `stored` is this key's mark of `leaf` (or bears the tag of a `retired`
        key, which cannot be checked without it); else what is wrong with it."""
        if stored is None or len(stored) != AUTHENTICATOR_SIZE:
            return "has no authenticator"
        if stored[:4] != self.tag:
            if stored[:4] in retired:
                return None
            return f"is authenticated by another key (tag {stored[:4].hex()})"
        if not hmac.compare_digest(stored, self.mark(leaf)):
            return "has an authenticator that does not verify"
        return None
