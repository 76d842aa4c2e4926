"""The canonical byte form of an event and the chain hash (specified in docs/integrity.md).

canonical(event) is JSON with the keys sorted, no whitespace, UTF-8 (not ASCII-escaped),
timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, lists as JSON arrays, and every field
present (null when empty). hash = SHA-256(prev_hash as 64 ASCII hex digits || canonical).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

# The fields the hash covers, in the order of the contract's event (section 7);
# `prev_hash` and `hash` are the chain itself and are not inside the canonical form.
HASHED_FIELDS: tuple[str, ...] = (
    "seq",
    "event_id",
    "kind",
    "recorded_at",
    "occurred_at",
    "actor",
    "actor_roles",
    "action",
    "action_category",
    "record_type",
    "record_id",
    "facility",
    "purpose",
    "justification",
    "break_glass",
    "decision",
    "reasons",
    "flags",
    "source",
    "client_event_id",
    "policy_version",
    "workstation",
    "source_ip",
    "details",
)
TIMESTAMP_FIELDS = frozenset({"recorded_at", "occurred_at"})
LIST_FIELDS = frozenset({"actor_roles", "reasons", "flags"})


def format_timestamp(value: datetime) -> str:
    """The one timestamp format of the ledger: UTC, microseconds, `Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """The canonical form of an event given as a mapping of its hashed fields."""
    body = {name: event[name] for name in HASHED_FIELDS}
    for name in TIMESTAMP_FIELDS:
        value = body[name]
        if isinstance(value, datetime):
            body[name] = format_timestamp(value)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """SHA-256 over the previous hash (hex, ASCII) followed by the canonical bytes."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()
