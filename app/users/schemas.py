"""Request and response bodies for users, training records and clients."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.strict import NAME_CHARS, NOT_BLANK, PROSE_CHARS, Day, StrictBool

Username = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$", strip_whitespace=True)
]
# Not blank, and nothing a hash cannot take (a lone surrogate has no UTF-8).
Password = Annotated[str, Field(min_length=12, max_length=256), NOT_BLANK, PROSE_CHARS]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True), NAME_CHARS
]
Key = Annotated[
    str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True), NAME_CHARS
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "username": "sgt.miller",
                    "full_name": "Sgt. Dana Miller",
                    "roles": ["guard_clerk"],
                    "facilities": ["greene"],
                    "volunteer": True,
                }
            ]
        },
    )

    username: Username
    full_name: Name
    roles: list[Key] = Field(min_length=1)
    facilities: list[Key] = Field(default_factory=list)
    volunteer: StrictBool = False
    password: Password | None = None


class UserUpdate(_Request):
    """Every field optional; users are never deleted, set `active` to false instead."""

    full_name: Name | None = None
    roles: list[Key] | None = Field(default=None, min_length=1)
    facilities: list[Key] | None = None
    volunteer: StrictBool | None = None
    active: StrictBool | None = None
    password: Password | None = None


class TrainingCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"module": "data_handling", "completed_on": "2025-09-20"}]},
    )

    module: Key
    completed_on: Day
    expires_on: Day | None = None


class TrainingRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    module: str
    completed_on: date
    expires_on: date
    recorded_at: datetime
    recorded_by: str


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    username: str
    full_name: str
    roles: list[str]
    facilities: list[str]
    volunteer: bool
    active: bool
    can_log_in: bool
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
    training: list[TrainingRead]


class UserPage(BaseModel):
    items: list[UserRead]
    next_cursor: str | None


class ClientCreate(_Request):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Greene case management"}]}
    )

    name: Name


class ClientCreated(BaseModel):
    """The secret is shown this once; only its hash is stored."""

    client_id: str
    client_secret: str
    name: str


class ClientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client_id: str
    name: str
    active: bool
    created_at: datetime


class ClientUpdate(_Request):
    active: StrictBool
