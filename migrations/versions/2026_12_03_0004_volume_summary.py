"""The volume summary: which records each actor touched, per bucket of the window's width

The ledger keeps it at append, in the appending transaction, so that a volume-spike count
reads at most a bounded number of rows whatever the actor's activity. It is derived from
`events` alone: the service builds it from the log at start-up for the policy's window
(`Ledger.prepare`), so an existing log needs nothing more here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "volume_touches",
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("record_type", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=128), nullable=False),
        sa.Column("first_us", sa.BigInteger(), nullable=False),
        sa.Column("last_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "actor", "width", "bucket", "record_type", "record_id", name=op.f("pk_volume_touches")
        ),
    )
    with op.batch_alter_table("volume_touches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_volume_touches_last", ["actor", "width", "bucket", "last_us"], unique=False
        )
        batch_op.create_index(
            "ix_volume_touches_first", ["actor", "width", "bucket", "first_us"], unique=False
        )
    op.create_table(
        "volume_widths",
        sa.Column("width", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("built_through_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("width", name=op.f("pk_volume_widths")),
    )


def downgrade() -> None:
    op.drop_table("volume_widths")
    with op.batch_alter_table("volume_touches", schema=None) as batch_op:
        batch_op.drop_index("ix_volume_touches_first")
        batch_op.drop_index("ix_volume_touches_last")
    op.drop_table("volume_touches")
