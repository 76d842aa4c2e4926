"""JWT access tokens: HS256 by default; any other algorithm, `none` included, is refused."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from jose import JWTError, jwt

from app.errors import Unauthorized

PRINCIPAL_KINDS = ("user", "client")
# Verified tokens remembered (with their expiry) so that a client's every request does not
# pay a signature check again; forgetting them all when full keeps this trivially correct.
VERIFIED_KEPT = 4096


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    kind: str


class TokenService:
    def __init__(self, secret: str, algorithm: str, ttl_seconds: int) -> None:
        self._secret = secret
        self.algorithm = algorithm
        self.ttl_seconds = ttl_seconds
        self._verified: dict[str, tuple[TokenClaims, float]] = {}

    def issue(self, subject: str, kind: str, now: datetime) -> str:
        claims = {
            "sub": subject,
            "typ": kind,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_seconds)).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return str(jwt.encode(claims, self._secret, algorithm=self.algorithm))

    def read(self, token: str) -> TokenClaims:
        """Verify signature, algorithm and expiry; any failure is the same 401.

        Only a token that passed every check is remembered, and only until it expires; the
        principal it names is still looked up (active? which roles?) on every request.
        """
        known = self._verified.get(token)
        if known is not None:
            if time.time() <= known[1]:
                return known[0]
            raise Unauthorized("invalid or expired token")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self.algorithm:
                raise JWTError("unexpected algorithm")
            claims = jwt.decode(token, self._secret, algorithms=[self.algorithm])
        except JWTError:
            raise Unauthorized("invalid or expired token") from None
        subject, kind, expires = claims.get("sub"), claims.get("typ"), claims.get("exp")
        if (
            not isinstance(subject, str)
            or kind not in PRINCIPAL_KINDS
            or not isinstance(expires, int | float)  # a token that never expires is refused
        ):
            raise Unauthorized("invalid or expired token")
        verified = TokenClaims(subject, kind)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.clear()
        self._verified[token] = (verified, float(expires))
        return verified
