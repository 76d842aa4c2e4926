"""Token and identity bodies."""

from __future__ import annotations

from pydantic import BaseModel


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class Me(BaseModel):
    """The caller, as the service sees them on this request."""

    kind: str
    name: str
    roles: list[str]
