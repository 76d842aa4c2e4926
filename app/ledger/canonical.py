"""The canonical byte form of an event and the chain hash (specified in docs/integrity.md).

canonical(event) is JSON with the keys sorted, no whitespace, UTF-8 (not ASCII-escaped),
timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, lists as JSON arrays, and every field
present (null when empty). hash = SHA-256(prev_hash as 64 ASCII hex digits || canonical).
"""

from __future__ import annotations

import hashlib
from _json import make_encoder  # CPython's C encoder, which json.dumps uses too
from collections.abc import Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring
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
# The same fields in the order they appear in the canonical JSON (sorted by name).
CANONICAL_ORDER: tuple[str, ...] = tuple(sorted(HASHED_FIELDS))
TIMESTAMP_FIELDS = frozenset({"recorded_at", "occurred_at"})
LIST_FIELDS = frozenset({"actor_roles", "reasons", "flags"})


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not part of the canonical form")


# The JSON encoder of the canonical form, built once: json.dumps builds a new one per call,
# which costs about as much as encoding a small event. Its output is exactly that of
# `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
_iterencode = make_encoder(None, _not_json, encode_basestring, None, ":", ",", True, False, True)


def format_timestamp(value: datetime) -> str:
    """The one timestamp format of the ledger: UTC, microseconds, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def encode_canonical(body: dict[str, Any]) -> bytes:
    """Canonical bytes of the hashed fields, timestamps already as text (any key order)."""
    return "".join(_iterencode(body, 0)).encode()


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """The canonical form of an event given as a mapping of its hashed fields."""
    body = {name: event[name] for name in CANONICAL_ORDER}
    for name in TIMESTAMP_FIELDS:
        value = body[name]
        if isinstance(value, datetime):
            body[name] = format_timestamp(value)
    return encode_canonical(body)


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """SHA-256 over the previous hash (hex, ASCII) followed by the canonical bytes."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()
