"""The one canonical JSON encoding (a leaf): sorted keys, no whitespace, UTF-8 as is.

The ledger hashes events in it, the policy version is a digest of it, manifests and
cursors are signed over it. It is exactly `json.dumps(value, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`; NaN and infinities are refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse
)


def canonical_json(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`value` in the canonical JSON form; `default` turns other values into JSON ones."""
    if default is None:
        return _ENCODER.encode(value)
    return json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
    ).encode(value)
