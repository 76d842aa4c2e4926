"""Argon2 hashing of passwords and client secrets (libpass, the maintained passlib)."""

from __future__ import annotations

from passlib.context import CryptContext


class SecretHasher:
    """Hash and verify secrets; verifying an unknown account costs the same as a real one."""

    def __init__(self, time_cost: int, memory_cost: int) -> None:
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__time_cost=time_cost,
            argon2__memory_cost=memory_cost,
        )
        self._dummy = self._context.hash("not a real secret, only spends the same time")

    def hash(self, secret: str) -> str:
        return str(self._context.hash(secret))

    def verify(self, secret: str, hashed: str | None) -> bool:
        """Verify `secret`; with no hash, spend the same time and answer False."""
        if hashed is None:
            self._context.verify(secret, self._dummy)
            return False
        return bool(self._context.verify(secret, hashed))
