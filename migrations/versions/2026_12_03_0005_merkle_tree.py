"""The Merkle tree over the events, its signed checkpoints and their witnesses'
cosignatures, and the log's settings

The tree (RFC 6962 hashing, leaves = the events' canonical bytes in seq order) is built
here for an existing log, in one pass over the events in seq order (memory stays flat:
only the tiles being filled are held). The tables are append-only like the ledger's.

This revision reads the events with the fields and forms of its own time (the canonical
form of docs/integrity.md §1), so a later change to the models does not change what it
builds.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 17:00:00
"""

import json
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.canonical import canonical_json
from app.ledger.merkle import TreeBuilder, leaf_hash

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("access_audit")

TABLES = ("tree_hashes", "tree_checkpoints", "tree_cosignatures", "log_settings")
# The hashed fields of an event at this revision, and which of them are JSON or timestamps.
HASHED = (
    "action", "action_category", "actor", "actor_roles", "break_glass", "client_event_id",
    "decision", "details", "event_id", "facility", "flags", "justification", "kind",
    "occurred_at", "policy_version", "purpose", "reasons", "record_id", "record_type",
    "recorded_at", "seq", "source", "source_ip", "workstation",
)  # fmt: skip
JSON_COLUMNS = frozenset({"actor_roles", "details", "flags", "reasons"})
TIMESTAMPS = frozenset({"occurred_at", "recorded_at"})
BATCH = 10_000


def upgrade() -> None:
    op.create_table(
        "tree_hashes",
        sa.Column("tile_level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("authenticator", sa.LargeBinary(length=36), nullable=True),
        sa.PrimaryKeyConstraint("tile_level", "position", name=op.f("pk_tree_hashes")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "tree_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_tree_checkpoints")),
    )
    op.create_table(
        "tree_cosignatures",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("witness", sa.String(length=255), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", "witness", name=op.f("pk_tree_cosignatures")),
    )
    op.create_table(
        "log_settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_log_settings")),
    )
    built = _build_tree()
    # Events written from here on carry an authenticator; those before cannot get one now.
    op.bulk_insert(
        sa.table("log_settings", sa.column("name"), sa.column("value")),
        [{"name": "authenticated_from_seq", "value": str(built + 1)}],
    )
    _refuse_update_and_delete()


def _select_events(dialect: str) -> str:
    columns = []
    for name in HASHED:
        if name in TIMESTAMPS:
            if dialect == "postgresql":
                columns.append(
                    f"to_char(timezone('UTC', {name}), 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                )
            else:  # SQLAlchemy's SQLite storage: `YYYY-MM-DD HH:MM:SS.ffffff`, UTC
                columns.append(f"replace({name}, ' ', 'T') || 'Z'")
        elif name in JSON_COLUMNS:
            columns.append(f"CAST({name} AS TEXT)")
        else:
            columns.append(name)
    return f"SELECT {', '.join(columns)} FROM events WHERE seq > :after ORDER BY seq LIMIT {BATCH}"


def _build_tree() -> int:
    bind = op.get_bind()
    query = sa.text(_select_events(bind.dialect.name))
    hashes = sa.table(
        "tree_hashes", sa.column("tile_level"), sa.column("position"), sa.column("hash")
    )
    builder = TreeBuilder()
    size = after = 0
    while True:
        rows = bind.execute(query, {"after": after}).all()
        if not rows:
            break
        leaves = []
        for row in rows:
            body = dict(zip(HASHED, row, strict=True))
            for name in JSON_COLUMNS:
                body[name] = json.loads(body[name])
            if body["break_glass"] is not None:  # SQLite stores booleans as 0 and 1
                body["break_glass"] = bool(body["break_glass"])
            if body["seq"] != size + 1:
                raise SystemExit(f"the log has a gap before seq {body['seq']}: run verify")
            leaves.append(leaf_hash(canonical_json(body).encode()))
            size = after = body["seq"]
        new = builder.add(leaves)
        bind.execute(
            sa.insert(hashes),
            [{"tile_level": level, "position": pos, "hash": value} for level, pos, value in new],
        )
        if size % 100_000 < len(leaves):
            log.warning("building the Merkle tree: %d events so far", size)
    if size:
        log.warning("built the Merkle tree over %d events", size)
    return size


def _refuse_update_and_delete() -> None:
    # The function of revision 0001 (PostgreSQL) refuses; SQLite gets triggers of its own.
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
            )
        return
    for table in TABLES:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
            )


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
