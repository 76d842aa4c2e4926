"""Every query of the oversight side: filtered pages, reports, reviews, the export stream.

SQLite and PostgreSQL differ in three places, all kept here: membership in a JSON list
(`json_each` against JSONB `@>` / `?|`), unnesting a JSON list into rows (`json_each`
against `jsonb_array_elements_text`), and the facility-local day (PostgreSQL computes it
with `AT TIME ZONE`; SQLite groups by UTC hour and the hours are folded into local days
here, still from one query).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Date,
    Integer,
    Row,
    String,
    Text,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression
from sqlalchemy.sql.operators import custom_op
from sqlalchemy.sql.selectable import FromClause, Select

from app.ledger.export_format import CSV_COLUMNS
from app.ledger.models import Checkpoint, Event


def is_sqlite(session: Session) -> bool:
    """Whether the session talks to SQLite (the three places the SQL differs, above)."""
    return session.get_bind().dialect.name == "sqlite"


EVENTS = Event.__table__
E = EVENTS.c
ACCESS_KINDS = frozenset({"decision", "report"})
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Criteria:
    """Which events a query covers; every field narrows it, None means any."""

    actor: str | None = None
    action: str | None = None
    category: str | None = None
    facility: str | None = None
    record_type: str | None = None
    record_id: str | None = None
    decision: str | None = None
    purpose: str | None = None
    kinds: tuple[str, ...] = ()
    flag: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class SummaryRow:
    key: dict[str, str | None]
    count: int
    denied: int
    flagged: int


EQUALITY_FILTERS = (
    ("actor", E.actor),
    ("action", E.action),
    ("category", E.action_category),
    ("facility", E.facility),
    ("record_type", E.record_type),
    ("record_id", E.record_id),
    ("decision", E.decision),
    ("purpose", E.purpose),
)


def _where(
    criteria: Criteria, sqlite: bool, whole_table: bool = False
) -> list[ColumnElement[bool]]:
    """The conditions of `criteria`; `whole_table` for reports that read most of the log."""
    conditions: list[ColumnElement[bool]] = []
    for name, column in EQUALITY_FILTERS:
        value = getattr(criteria, name)
        if value is not None:
            conditions.append(column == value)
    kind: ColumnElement[str] = E.kind
    if sqlite and whole_table and ACCESS_KINDS & set(criteria.kinds):
        kind = _unindexed(E.kind)
    if len(criteria.kinds) == 1:
        conditions.append(kind == criteria.kinds[0])
    elif criteria.kinds:
        conditions.append(kind.in_(criteria.kinds))
    if criteria.flag is not None:
        conditions.append(_contains(E.flags, [criteria.flag], sqlite))
    if criteria.reason is not None:
        conditions.append(_contains(E.reasons, [criteria.reason], sqlite))
    if criteria.since is not None:
        conditions.append(E.occurred_at >= criteria.since)
    if criteria.until is not None:
        conditions.append(E.occurred_at < criteria.until)
    return conditions


def _unindexed(column: ColumnElement[T]) -> ColumnElement[T]:
    """`+column`: the same value, as a term SQLite's planner does not answer from an index.

    SQLite plans without statistics and takes an index for any equality or GROUP BY it
    can; for a report over most of the log, walking the index of `kind` (nearly every row
    matches) or of a grouping column costs a table lookup per row, several times a plain
    scan. PostgreSQL costs its plans and needs no such hint.
    """
    return UnaryExpression(column, operator=custom_op("+"), type_=column.type)


def _contains(
    column: ColumnElement[Any], values: Sequence[str], sqlite: bool
) -> ColumnElement[bool]:
    """The JSON list `column` holds any of `values`."""
    if sqlite:
        item = func.json_each(column).table_valued("value").alias("item")
        return select(literal(1)).select_from(item).where(item.c.value.in_(values)).exists()
    document = type_coerce(column, JSONB)
    if len(values) == 1:
        contains: ColumnElement[bool] = document.contains(list(values))
        return contains
    has_any: ColumnElement[bool] = document.has_any(array(list(values)))
    return has_any


def _unnest(column: ColumnElement[Any], name: str, sqlite: bool) -> FromClause:
    """The items of a JSON list of strings as rows of a `value` column, beside each event."""
    if sqlite:
        return func.json_each(column).table_valued("value").alias(name)
    return func.jsonb_array_elements_text(column).table_valued("value").lateral(name)


def _flagged(sqlite: bool) -> ColumnElement[bool]:
    """The event carries a flag: the predicate of the partial index `ix_events_flagged`,
    written exactly as the migration writes it, so that both planners match it. It compares
    the stored list with the empty one and never parses JSON (a damaged row still reads)."""
    empty: ColumnElement[Any] = literal_column("'[]'" if sqlite else "'[]'::jsonb")
    flagged: ColumnElement[bool] = E.flags != empty
    return flagged


def _keyset(query: Select[Any], after: int | None, limit: int, newest_first: bool) -> Select[Any]:
    if after is not None:
        query = query.where(E.seq < after if newest_first else E.seq > after)
    return query.order_by(E.seq.desc() if newest_first else E.seq).limit(limit)


def event_by_seq(session: Session, seq: int) -> Event | None:
    return session.get(Event, seq)


def events_page(
    session: Session, criteria: Criteria, *, after: int | None, limit: int
) -> list[Event]:
    """Events matching `criteria` with seq above `after`, in seq order."""
    query = select(Event).where(*_where(criteria, is_sqlite(session)))
    return list(session.scalars(_keyset(query, after, limit, newest_first=False)))


def reviews_of(session: Session, seq: int) -> list[Event]:
    """The review events of event `seq`, oldest first."""
    query = (
        select(Event)
        .where(Event.record_type == "event", Event.record_id == str(seq), Event.kind == "review")
        .order_by(Event.seq)
    )
    return list(session.scalars(query))


def summary(
    session: Session, criteria: Criteria, group_by: Sequence[str], timezone: ZoneInfo
) -> list[SummaryRow]:
    """Counts, denials and flagged events per group, from one query."""
    sqlite = is_sqlite(session)
    source: FromClause = EVENTS
    keys: list[ColumnElement[Any]] = []
    for name in group_by:
        if name == "role":
            role = _unnest(E.actor_roles, "role", sqlite)
            source = source.outerjoin(role, true())
            keys.append(role.c.value.label(name))
        elif name == "day" and sqlite:
            # SQLite stores `YYYY-MM-DD HH:MM:SS.ffffff` (UTC): group by the hour, fold below.
            keys.append(func.substr(E.occurred_at, 1, 13, type_=String).label(name))
        elif name == "day":
            zone = literal_column("'" + timezone.key.replace("'", "''") + "'", String)
            keys.append(cast(func.timezone(zone, E.occurred_at), Date).label(name))
        else:
            column = SUMMARY_COLUMNS[name]
            keys.append((_unindexed(column) if sqlite else column).label(name))
    query = (
        select(
            *keys,
            func.count().label("events"),
            func.sum(case((E.decision == "deny", 1), else_=0)).label("denied"),
            func.sum(case((_flagged(sqlite), 1), else_=0)).label("flagged"),
        )
        .select_from(source)
        .where(*_where(criteria, sqlite, whole_table=True))
        .group_by(*keys)
    )
    folded: dict[tuple[str | None, ...], list[int]] = {}
    local_days: dict[str, str] = {}
    for row in session.execute(query):
        key = []
        for name, value in zip(group_by, row, strict=False):
            if name == "day" and value is not None:
                if sqlite:
                    if value not in local_days:
                        local_days[value] = _local_day(value, timezone)
                    value = local_days[value]
                elif isinstance(value, date):
                    value = value.isoformat()
            key.append(value)
        totals = folded.setdefault(tuple(key), [0, 0, 0])
        totals[0] += row.events
        totals[1] += row.denied or 0
        totals[2] += row.flagged or 0
    return [
        SummaryRow(dict(zip(group_by, key, strict=True)), *totals) for key, totals in folded.items()
    ]


SUMMARY_COLUMNS: dict[str, ColumnElement[Any]] = {
    "facility": E.facility,
    "action": E.action,
    "category": E.action_category,
    "purpose": E.purpose,
    "decision": E.decision,
}


def _local_day(utc_hour: str, timezone: ZoneInfo) -> str:
    """`YYYY-MM-DD HH` (UTC) as the facility-local date it falls on."""
    hour = datetime(
        int(utc_hour[0:4]),
        int(utc_hour[5:7]),
        int(utc_hour[8:10]),
        int(utc_hour[11:13]),
        tzinfo=UTC,
    )
    return hour.astimezone(timezone).date().isoformat()


# A mission-creep attempt: the fields its report shows.
CREEP_COLUMNS = (
    "seq", "occurred_at", "actor", "actor_roles", "action", "action_category", "facility",
    "decision", "kind",
)  # fmt: skip


def denials(
    session: Session,
    criteria: Criteria,
    guard_roles: Sequence[str],
    guard_forbidden: Sequence[str],
) -> list[Row[Any]]:
    """One query: denial counts by reason, actor, facility and in total, and every mission-creep
    attempt (a Guard role trying a forbidden category, whatever the decision).

    Rows carry `part` (`creep`, `reason`, `actor`, `facility`, `total`); counts are in `n`
    and `key`, an attempt's fields in the columns of `CREEP_COLUMNS`.
    """
    sqlite = is_sqlite(session)
    # One read of the log: the events that are denied or of a forbidden category (in one
    # pass over the table, not one per section); every part below reads this small set.
    scope = (
        select(*(E[name] for name in CREEP_COLUMNS), E.reasons)
        .where(
            *_where(criteria, sqlite, whole_table=True),
            or_(E.decision == "deny", E.action_category.in_(guard_forbidden)),
        )
        .cte("scope")
    )
    creep = select(
        literal("creep").label("part"),
        null().label("key"),
        null().label("n"),
        *(scope.c[name] for name in CREEP_COLUMNS),
    ).where(
        scope.c.action_category.in_(guard_forbidden),
        _contains(scope.c.actor_roles, guard_roles, sqlite),
    )
    denied = scope.c.decision == "deny"
    padding = [null().label(name) for name in CREEP_COLUMNS]
    reason = _unnest(scope.c.reasons, "reason", sqlite)
    parts: list[Select[*tuple[Any, ...]]] = [
        creep,
        select(literal("reason"), reason.c.value, func.count(), *padding)
        .select_from(scope.join(reason, true()))
        .where(denied)
        .group_by(reason.c.value),
    ]
    for part, column in (("actor", scope.c.actor), ("facility", scope.c.facility)):
        parts.append(
            select(literal(part), column, func.count(), *padding).where(denied).group_by(column)
        )
    parts.append(select(literal("total"), null(), func.count(), *padding).where(denied))
    return list(session.execute(union_all(*parts)))


# A flagged event: the fields its report shows; the page also reads `details` (for the
# reason messages).
FLAGGED_FIELDS = (
    "seq", "event_id", "kind", "occurred_at", "actor", "actor_roles", "action",
    "action_category", "record_type", "record_id", "facility", "purpose", "justification",
    "break_glass", "decision", "reasons", "flags",
)  # fmt: skip
FLAGGED_COLUMNS = (*FLAGGED_FIELDS, "details")


def flagged(
    session: Session,
    criteria: Criteria,
    *,
    status: str | None,
    after: int | None,
    limit: int,
    newest_first: bool,
) -> list[Row[Any]]:
    """One query: a page of flagged events with their latest review, and the open/reviewed
    counts over every flagged event matching `criteria`.

    Rows carry `part`: `item` rows are events (and `reviews`, `review_*` of the latest
    review), the one `counts` row has `open`, `reviewed` and `follow_up` (reviewed, the
    latest review asking for follow-up).
    """
    sqlite = is_sqlite(session)
    latest = (
        select(
            cast(E.record_id, Integer).label("reviewed_seq"),
            func.max(E.seq).label("review_seq"),
            func.count().label("reviews"),
        )
        .where(E.kind == "review", E.record_type == "event")
        .group_by(E.record_id)
        .subquery("latest")
    )
    review = EVENTS.alias("review")
    matching = [*_where(criteria, sqlite, whole_table=True), _flagged(sqlite)]
    item_columns: list[ColumnElement[Any]] = [
        *(E[name] for name in FLAGGED_COLUMNS),
        latest.c.reviews,
        review.c.seq.label("review_seq"),
        review.c.event_id.label("review_event_id"),
        review.c.actor.label("reviewer"),
        review.c.recorded_at.label("reviewed_at"),
        review.c.details.label("review_details"),
    ]
    follow_up = review.c.details["disposition"].as_string() == "follow_up"
    page_conditions = list(matching)
    if status == "open":
        page_conditions.append(latest.c.review_seq.is_(None))
    elif status == "reviewed":
        page_conditions.append(latest.c.review_seq.is_not(None))
    elif status == "follow_up":
        page_conditions.append(follow_up)
    page = _keyset(
        select(*item_columns)
        .select_from(
            EVENTS.outerjoin(latest, latest.c.reviewed_seq == E.seq).outerjoin(
                review, review.c.seq == latest.c.review_seq
            )
        )
        .where(*page_conditions),
        after,
        limit,
        newest_first,
    ).subquery("page")
    items = select(
        literal("item").label("part"),
        null().label("open"),
        null().label("reviewed"),
        null().label("follow_up"),
        *page.c,
    )
    counts = (
        select(
            literal("counts"),
            func.sum(case((latest.c.review_seq.is_(None), 1), else_=0)),
            func.sum(case((latest.c.review_seq.is_not(None), 1), else_=0)),
            func.sum(case((follow_up, 1), else_=0)),
            *(null() for _ in item_columns),
        )
        .select_from(
            EVENTS.outerjoin(latest, latest.c.reviewed_seq == E.seq).outerjoin(
                review, review.c.seq == latest.c.review_seq
            )
        )
        .where(*matching)
    )
    return list(session.execute(union_all(items, counts)))


def export_event(session: Session, export_id: str) -> Event | None:
    """The `export` event that recorded export `export_id`."""
    query = select(Event).where(
        Event.record_type == "export", Event.record_id == export_id, Event.kind == "export"
    )
    return session.scalars(query.order_by(Event.seq).limit(1)).first()


def seq_bounds(session: Session, criteria: Criteria) -> tuple[int | None, int | None]:
    """The lowest and highest seq of the events matching `criteria` (None, None: none)."""
    sqlite = is_sqlite(session)
    row = session.execute(
        select(func.min(E.seq), func.max(E.seq)).where(*_where(criteria, sqlite))
    ).one()
    return row[0], row[1]


def head_seq(session: Session) -> int | None:
    """The highest seq in the log (None when it is empty)."""
    head: int | None = session.scalar(select(func.max(E.seq)))
    return head


def checkpoint_covering(session: Session, seq: int | None) -> Checkpoint | None:
    """The earliest checkpoint at or after `seq` (the latest one when `seq` is None)."""
    if seq is None:
        query = select(Checkpoint).order_by(Checkpoint.seq.desc(), Checkpoint.id.desc())
    else:
        query = select(Checkpoint).where(Checkpoint.seq >= seq)
        query = query.order_by(Checkpoint.seq, Checkpoint.id)
    return session.scalars(query.limit(1)).first()


def _ledger_timestamp(column: ColumnElement[Any], sqlite: bool) -> ColumnElement[str]:
    """A UTC timestamp as the ledger's text form `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    if sqlite:
        # SQLite holds UTC as `YYYY-MM-DD HH:MM:SS.ffffff` text (SQLAlchemy's storage format).
        text_form: ColumnElement[str] = func.replace(
            column, literal_column("' '"), literal_column("'T'"), type_=String
        ).concat(literal_column("'Z'"))
        return text_form
    pattern: ColumnElement[str] = literal_column('\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\'')
    return func.to_char(func.timezone(literal_column("'UTC'"), column), pattern, type_=String)


def stream_export_rows(
    session: Session, criteria: Criteria, batch: int
) -> Iterator[Sequence[Row[Any]]]:
    """Batches of events in seq order, columns in `CSV_COLUMNS` order, from a server-side
    cursor (PostgreSQL) or an incrementally stepped statement (SQLite): constant memory.

    Values come in the forms that are cheapest to turn into CSV cells: timestamps as the
    ledger's text, `actor_roles`, `reasons`, `flags` and `details` as their JSON text.
    """
    sqlite = is_sqlite(session)
    columns: list[ColumnElement[Any]] = []
    for name in CSV_COLUMNS:
        column = E[name]
        if name in ("recorded_at", "occurred_at"):
            columns.append(_ledger_timestamp(column, sqlite).label(name))
        elif name in ("actor_roles", "reasons", "flags", "details"):
            columns.append(cast(column, Text).label(name))
        else:
            columns.append(column)
    query = (
        select(*columns)
        .where(*_where(criteria, sqlite))
        .order_by(E.seq)
        .execution_options(stream_results=True, yield_per=batch)
    )
    yield from session.execute(query).partitions()


def export_seqs(session: Session, criteria: Criteria, last_seq: int) -> list[int]:
    """The seqs an export with `criteria` held, up to its last row (the log only grows, and
    commits in seq order: the same rows)."""
    sqlite = is_sqlite(session)
    query = select(E.seq).where(*_where(criteria, sqlite), E.seq <= last_seq).order_by(E.seq)
    return list(session.scalars(query))
