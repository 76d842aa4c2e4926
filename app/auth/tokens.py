"""JWT access tokens: HS256 by default; any other algorithm, `none` included, is refused.

Expiry is judged by the service's clock, like everything else that depends on the time.
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeGuard

from cachetools import TLRUCache
from jose import JWTError, jwt

from app.clock import Clock
from app.errors import Unauthorized
from app.strict import MAX_YEAR, name_chars

PRINCIPAL_KINDS: Final = ("user", "client")
# Verified tokens remembered until they expire, so that a client's every request does not
# pay a signature check again (the principal is still looked up on every request).
VERIFIED_KEPT: Final = 4096
# The latest `exp` taken: the end of the year 9999, UTC (as every other time, contract 15).
LATEST_EXPIRY: Final = datetime(MAX_YEAR, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    kind: str
    # A user's credential version when the token was issued (`ver`); None for a client.
    version: int | None = None


class TokenService:
    def __init__(self, secret: str, algorithm: str, ttl_seconds: int, clock: Clock) -> None:
        self._secret = secret
        self.algorithm = algorithm
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._verified: TLRUCache[str, tuple[TokenClaims, float]] = TLRUCache(
            VERIFIED_KEPT, ttu=lambda _token, value, _now: value[1], timer=self._now
        )
        self._lock = threading.Lock()  # the cache is read from the loop and from threads

    def _now(self) -> float:
        return self._clock().timestamp()

    def issue(self, subject: str, kind: str, version: int | None = None) -> str:
        """A token for `subject`; a user's carries `version`, their credential version."""
        now = self._clock()
        claims: dict[str, Any] = {
            "sub": subject,
            "typ": kind,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_seconds)).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        if version is not None:
            claims["ver"] = version
        return str(jwt.encode(claims, self._secret, algorithm=self.algorithm))

    def read(self, token: str) -> TokenClaims:
        """Verify signature, algorithm and expiry; any failure is the same 401."""
        with self._lock:
            known = self._verified.get(token)
        if known is not None:
            return known[0]
        claims = self._decode(token)
        subject, kind = claims.get("sub"), claims.get("typ")
        expires = _expiry(claims.get("exp"))
        version = claims.get("ver")
        if (
            not _is_name(subject)
            or kind not in PRINCIPAL_KINDS
            or expires is None
            # a user's token names the credential version it was issued for (no bool)
            or (kind == "user" and (isinstance(version, bool) or not isinstance(version, int)))
            or (kind == "client" and version is not None)
            or expires <= self._now()
        ):
            raise Unauthorized("invalid or expired token")
        verified = TokenClaims(subject, kind, version)
        with self._lock:
            self._verified[token] = (verified, expires)
        return verified

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self.algorithm:
                raise JWTError("unexpected algorithm")
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[self.algorithm],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except JWTError:
            raise Unauthorized("invalid or expired token") from None
        return claims


def _expiry(value: object) -> float | None:
    """`exp` as a time, or None: a number (a bool is not one), finite, by the end of 9999.

    A token without a usable expiry (null, a list, a string, NaN, infinity, 10**400) would
    never expire, or fail on the way to the cache: it is the same 401 as any other.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and not 0 < value <= LATEST_EXPIRY:
        return None  # before float(): 10**400 does not convert
    expires = float(value)
    if not math.isfinite(expires) or not 0 < expires <= LATEST_EXPIRY:
        return None
    return expires


def _is_name(value: object) -> TypeGuard[str]:
    """`sub` names an account: a string the database can look up (no NUL, PostgreSQL)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        name_chars(value)
    except ValueError:
        return False
    return True
