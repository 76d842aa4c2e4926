"""The canonical byte form of an event and the chain hash (specified in docs/integrity.md).

canonical(event) is the canonical JSON (`app.canonical`) of its hashed fields
(`models.HASHED_FIELDS`): keys sorted, no whitespace, UTF-8 (not ASCII-escaped),
timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, lists as JSON arrays, and every field
present (null when empty). hash = SHA-256(prev_hash as 64 ASCII hex digits || canonical).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from app.canonical import canonical_json
from app.ledger.models import HASHED_FIELDS, TIMESTAMP_FIELDS

GENESIS_HASH: Final = "0" * 64
# The hashed fields in the order they appear in the canonical JSON (sorted by name).
CANONICAL_ORDER: Final = tuple(sorted(HASHED_FIELDS))


def format_timestamp(value: datetime) -> str:
    """The one timestamp format of the ledger: UTC, microseconds, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def encode_canonical(body: Mapping[str, Any]) -> bytes:
    """Canonical bytes of the hashed fields, timestamps already as text (any key order)."""
    return canonical_json(body).encode()


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """The canonical form of an event given as a mapping of (at least) its hashed fields."""
    body = {name: event[name] for name in CANONICAL_ORDER}
    for name in TIMESTAMP_FIELDS:
        value = body[name]
        if isinstance(value, datetime):
            body[name] = format_timestamp(value)
    return encode_canonical(body)


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """SHA-256 over the previous hash (hex, ASCII) followed by the canonical bytes."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()
