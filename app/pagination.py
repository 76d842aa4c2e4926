"""Keyset pagination, one scheme for every paged endpoint.

A page is read as `limit + 1` rows after the previous page's last key; the extra row only
says that there is a next page. The cursor is opaque: the last key and a digest of the
query that produced it, signed (HMAC) so that a client can neither forge a position nor
carry a cursor over to another query (either is a 422 naming `cursor`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from app.canonical import canonical_json
from app.errors import Invalid

T = TypeVar("T")
# The fields of a query that choose the page, not the rows.
PAGE_FIELDS: Final = frozenset({"limit", "cursor"})
Key = int | str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Cursors:
    """Issues and reads the signed cursors of this deployment."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"access-audit cursor v1", hashlib.sha256).digest()

    def _fingerprint(self, scope: str, query: Mapping[str, Any]) -> str:
        """A short digest of the query a cursor belongs to (its filters, not its page)."""
        chosen = {name: value for name, value in query.items() if name not in PAGE_FIELDS}
        return hashlib.sha256(canonical_json([scope, chosen]).encode()).hexdigest()[:16]

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:12]

    def encode(self, scope: str, query: Mapping[str, Any], after: Key) -> str:
        payload = canonical_json({"k": after, "q": self._fingerprint(scope, query)}).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, scope: str, query: Mapping[str, Any], cursor: str | None) -> Key | None:
        """The key a cursor continues after; 422 naming `cursor` if it is not one of ours."""
        if cursor is None:
            return None
        try:
            encoded_payload, encoded_mac = cursor.split(".")
            payload = _unb64(encoded_payload)
            if not hmac.compare_digest(_unb64(encoded_mac), self._mac(payload)):
                raise ValueError("bad signature")
            values = json.loads(payload)
            key = values["k"]
            if isinstance(key, bool) or not isinstance(key, int | str):
                raise ValueError("bad key")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise Invalid(["query", "cursor"], "not a cursor this service issued") from exc
        if values.get("q") != self._fingerprint(scope, query):
            raise Invalid(["query", "cursor"], "the cursor belongs to a different query")
        return key

    def page(
        self,
        rows: Sequence[T],
        limit: int,
        scope: str,
        query: Mapping[str, Any],
        key: Callable[[T], Key],
    ) -> tuple[list[T], str | None]:
        """The page (`rows` were read as `limit + 1`) and the cursor of the next one."""
        items = list(rows[:limit])
        more = len(rows) > limit and bool(items)
        return items, (self.encode(scope, query, key(items[-1])) if more else None)


def int_key(key: Key | None) -> int | None:
    """A decoded key that must be a position (a seq or an id)."""
    if key is None or isinstance(key, int):
        return key
    raise Invalid(["query", "cursor"], "not a cursor this service issued")


def str_key(key: Key | None) -> str | None:
    """A decoded key that must be a name."""
    if key is None or isinstance(key, str):
        return key
    raise Invalid(["query", "cursor"], "not a cursor this service issued")
