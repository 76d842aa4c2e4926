"""Users, training records and integration clients."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, JSONList, UTCDateTime


class User(Base):
    """A person: holds service roles, mission roles or both; never deleted, only deactivated."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(JSONList)
    facilities: Mapped[list[str]] = mapped_column(JSONList)
    volunteer: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # In every token of this user; bumped when a credential change must end earlier tokens.
    credential_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Login attempts whose password is being checked now (`app.auth.service.Logins`).
    logins_pending: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    logins_pending_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    training: Mapped[list[Training]] = relationship(
        back_populates="user", order_by="Training.completed_on", lazy="selectin"
    )

    @property
    def can_log_in(self) -> bool:
        """A user without a password is an actor only."""
        return self.password_hash is not None


class Training(Base):
    """One completed training module; the latest record per module is the one that counts."""

    __tablename__ = "training_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    module: Mapped[str] = mapped_column(String(64))
    completed_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date] = mapped_column(Date)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_by: Mapped[str] = mapped_column(String(64))

    user: Mapped[User] = relationship(back_populates="training")


class Client(Base):
    """A registered integrating application (OAuth2 client credentials, role `integration`)."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # No longer counted or honoured: a client is never locked by failures (whoever knows
    # its id could lock it out); token requests are rate-limited per address instead.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
