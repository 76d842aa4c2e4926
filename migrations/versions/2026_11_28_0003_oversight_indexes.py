"""Oversight indexes: by action category, the flagged events, and reports by period

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-28 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        # Reports over a period (and the whole-mission summaries) read the columns they count
        # from this index alone: occurred_at first, so a period is a range of it.
        batch_op.drop_index('ix_events_occurred_at')
        batch_op.create_index(
            'ix_events_occurred_at', ['occurred_at', 'kind', 'facility', 'decision', 'flags'],
            unique=False,
        )
        # `GET /v1/events?category=` pages in seq order; the mission-creep report finds the
        # sworn/enforcement attempts without reading the whole log.
        batch_op.create_index('ix_events_category_seq', ['action_category', 'seq'], unique=False)
        # The flags report reads only flagged events (a small share of the log), by seq,
        # with the columns its counts filter on. The predicate is written per database
        # exactly as app/reports/repository.py writes it, so that the planners match it.
        batch_op.create_index(
            'ix_events_flagged', ['seq', 'occurred_at', 'kind'], unique=False,
            sqlite_where=sa.text("flags != '[]'"),
            postgresql_where=sa.text("flags <> '[]'::jsonb"),
        )


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_flagged')
        batch_op.drop_index('ix_events_category_seq')
        batch_op.drop_index('ix_events_occurred_at')
        batch_op.create_index('ix_events_occurred_at', ['occurred_at'], unique=False)
