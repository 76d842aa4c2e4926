"""Logins: each user's credential version, and the login attempts being checked

`credential_version` is written into every token a user gets and compared on every request:
a password change, a deactivation, a reactivation or a role taken away bumps it, so every
earlier token of that user ends at once. `logins_pending` counts the attempts whose password
is being checked now (it is checked outside the transaction that reserves it), so that no
more attempts are evaluated than the failures left before the lock; a reservation left by a
process that died lapses at `logins_pending_until`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("credential_version", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("logins_pending", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("logins_pending_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("logins_pending_until")
        batch_op.drop_column("logins_pending")
        batch_op.drop_column("credential_version")
