"""JWT access tokens: HS256 by default; any other algorithm, `none` included, is refused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from jose import JWTError, jwt

from app.errors import Unauthorized

PRINCIPAL_KINDS = ("user", "client")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    kind: str


class TokenService:
    def __init__(self, secret: str, algorithm: str, ttl_seconds: int) -> None:
        self._secret = secret
        self.algorithm = algorithm
        self.ttl_seconds = ttl_seconds

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
        """Verify signature, algorithm and expiry; any failure is the same 401."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self.algorithm:
                raise JWTError("unexpected algorithm")
            claims = jwt.decode(token, self._secret, algorithms=[self.algorithm])
        except JWTError:
            raise Unauthorized("invalid or expired token") from None
        subject, kind = claims.get("sub"), claims.get("typ")
        if not isinstance(subject, str) or kind not in PRINCIPAL_KINDS:
            raise Unauthorized("invalid or expired token")
        return TokenClaims(subject, kind)
