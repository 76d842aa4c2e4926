"""Token and identity bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

from app.strict import NAME_CHARS

# A username or client id as the token endpoint takes it: a failed login is logged under
# this name, so it must be one the log can hold (no NUL, control character or lone
# surrogate: 422, on every database alike, and nothing is logged).
LoginName = Annotated[str, StringConstraints(min_length=1), NAME_CHARS]


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class Me(BaseModel):
    """The caller, as the service sees them on this request."""

    kind: str
    name: str
    roles: list[str]
