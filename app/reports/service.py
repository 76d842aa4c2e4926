"""Reading the log, the oversight reports and reviews: the rules between router and queries.

Time filters apply to `occurred_at`: `since` is inclusive, `until` exclusive; a bare date
is a facility-local day (`since` from its start, `until` through its end). Reports count
access events (kinds `decision` and `report`) unless a `kind` is given. Cursors are opaque:
a signed `seq` bound to the query that produced it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row
from sqlalchemy.orm import Session

from app.context import AppContext
from app.deps import Principal
from app.errors import Invalid, NotFound
from app.ledger.models import Event
from app.ledger.schemas import explain
from app.ledger.service import NewEvent
from app.reports import repository
from app.reports.repository import Criteria
from app.reports.schemas import (
    ACCESS_KINDS,
    AccessPage,
    AccessQuery,
    AccessRead,
    ActorCount,
    CreepAttempt,
    DenialsQuery,
    DenialsReport,
    EventFilters,
    EventPage,
    EventQuery,
    EventRead,
    FacilityCount,
    FlaggedEvent,
    FlagsQuery,
    FlagsReport,
    MissionCreep,
    ReasonCount,
    ReviewCreate,
    ReviewRead,
    SummaryGroup,
    SummaryQuery,
    SummaryReport,
)

READ_FIELDS = tuple(EventRead.model_fields)
PAGE_FIELDS = frozenset({"limit", "cursor"})


def period(
    since: datetime | date | None, until: datetime | date | None, timezone: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """The [since, until) bounds in UTC; a date is a facility-local day."""
    start = _instant(since, timezone, end_of_day=False)
    end = _instant(until, timezone, end_of_day=True)
    if start is not None and end is not None:
        # A date stands for a whole day: since=Oct 2 and until=Oct 1 meet at one instant.
        whole_days = not isinstance(since, datetime) or not isinstance(until, datetime)
        if start > end or (start == end and whole_days):
            raise Invalid(["query", "since"], "since is after until")
    return start, end


def _instant(
    value: datetime | date | None, timezone: ZoneInfo, end_of_day: bool
) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    day = value + timedelta(days=1) if end_of_day else value
    return datetime(day.year, day.month, day.day, tzinfo=timezone)


def criteria(
    filters: EventFilters, timezone: ZoneInfo, default_kinds: Sequence[str] = ()
) -> Criteria:
    """What the filters select; without a `kind`, the kinds are `default_kinds` (none: all)."""
    since, until = period(filters.since, filters.until, timezone)
    return Criteria(
        actor=filters.actor,
        action=filters.action,
        category=filters.category,
        facility=filters.facility,
        record_type=filters.record_type,
        record_id=filters.record_id,
        decision=filters.decision,
        purpose=filters.purpose,
        kinds=(filters.kind,) if filters.kind else tuple(default_kinds),
        flag=filters.flag.value if filters.flag else None,
        since=since,
        until=until,
    )


def event_read(event: Event) -> EventRead:
    values = {name: getattr(event, name) for name in READ_FIELDS if name != "reasons"}
    return EventRead(**values, reasons=explain(event.reasons, event.details))


def _cursor_key(context: AppContext) -> bytes:
    secret = context.settings.jwt_secret.encode()
    return hmac.new(secret, b"access-audit cursor v1", hashlib.sha256).digest()


def _fingerprint(scope: str, query: Any) -> str:
    """A short digest of the query a cursor belongs to (its filters, not its page)."""
    values = query.model_dump(mode="json", exclude=PAGE_FIELDS) if query is not None else {}
    text = json.dumps([scope, values], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(context: AppContext, scope: str, query: Any, seq: int) -> str:
    payload = json.dumps({"s": seq, "q": _fingerprint(scope, query)}, separators=(",", ":"))
    mac = hmac.new(_cursor_key(context), payload.encode(), hashlib.sha256).digest()[:12]
    return f"{_b64(payload.encode())}.{_b64(mac)}"


def decode_cursor(context: AppContext, scope: str, query: Any, cursor: str | None) -> int | None:
    """The seq a cursor continues after; 422 naming `cursor` if it is not one of ours."""
    if cursor is None:
        return None
    try:
        encoded_payload, encoded_mac = cursor.split(".")
        payload = _unb64(encoded_payload)
        mac = _unb64(encoded_mac)
        expected = hmac.new(_cursor_key(context), payload, hashlib.sha256).digest()[:12]
        if not hmac.compare_digest(mac, expected):
            raise ValueError("bad signature")
        values = json.loads(payload)
        seq = values["s"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("bad seq")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise Invalid(["query", "cursor"], "not a cursor this service issued") from exc
    if values.get("q") != _fingerprint(scope, query):
        raise Invalid(["query", "cursor"], "the cursor belongs to a different query")
    return seq


def list_events(session: Session, context: AppContext, query: EventQuery) -> EventPage:
    """A page of events matching the filters, in seq order."""
    after = decode_cursor(context, "events", query, query.cursor)
    selected = criteria(query, context.policy.timezone)
    events = repository.events_page(session, selected, after=after, limit=query.limit + 1)
    more = len(events) > query.limit
    events = events[: query.limit]
    next_cursor = encode_cursor(context, "events", query, events[-1].seq) if more else None
    return EventPage(items=[event_read(e) for e in events], next_cursor=next_cursor)


def get_event(session: Session, seq: int) -> EventRead:
    return event_read(_event(session, seq))


def _event(session: Session, seq: int) -> Event:
    event = repository.event_by_seq(session, seq)
    if event is None:
        raise NotFound(f"no event {seq}")
    return event


def record_accesses(
    session: Session, context: AppContext, record_type: str, record_id: str, query: AccessQuery
) -> AccessPage:
    """The accounting of disclosures: every decision and reported access to one record."""
    scope = f"accesses\n{record_type}\n{record_id}"
    after = decode_cursor(context, scope, query, query.cursor)
    since, until = period(query.since, query.until, context.policy.timezone)
    selected = Criteria(
        record_type=record_type, record_id=record_id, kinds=ACCESS_KINDS, since=since, until=until
    )
    events = repository.events_page(session, selected, after=after, limit=query.limit + 1)
    more = len(events) > query.limit
    events = events[: query.limit]
    return AccessPage(
        record_type=record_type,
        record_id=record_id,
        items=[
            AccessRead(
                **{name: getattr(e, name) for name in AccessRead.model_fields if name != "reasons"},
                reasons=explain(e.reasons, e.details),
            )
            for e in events
        ],
        next_cursor=encode_cursor(context, scope, query, events[-1].seq) if more else None,
    )


def _sort_key(values: Sequence[Any]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, str(value or "")) for value in values)


def summary_report(session: Session, context: AppContext, query: SummaryQuery) -> SummaryReport:
    """Counts per group (an event counts once per role it was recorded with)."""
    timezone = context.policy.timezone
    selected = criteria(query, timezone, ACCESS_KINDS)
    group_by = list(dict.fromkeys(query.group_by))
    rows = repository.summary(session, selected, group_by, timezone)
    rows.sort(key=lambda row: _sort_key(list(row.key.values())))
    return SummaryReport(
        groups=[
            SummaryGroup(key=row.key, count=row.count, denied=row.denied, flagged=row.flagged)
            for row in rows
        ],
        group_by=group_by,
        kinds=list(selected.kinds),
        since=selected.since,
        until=selected.until,
    )


def _ranked(counts: Mapping[str | None, int]) -> list[tuple[str | None, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0] is None, item[0] or ""))


def denials_report(session: Session, context: AppContext, query: DenialsQuery) -> DenialsReport:
    """Denials by reason, actor and facility, after every Guard sworn/enforcement attempt."""
    policy = context.policy
    selected = criteria(query, policy.timezone, ACCESS_KINDS)
    rows = repository.denials(
        session, selected, sorted(policy.guard_roles), sorted(policy.guard_forbidden)
    )
    attempts: list[CreepAttempt] = []
    sections: dict[str, dict[str | None, int]] = {"reason": {}, "actor": {}, "facility": {}}
    total = 0
    for row in rows:
        if row.part == "creep":
            # Typed columns straight from the database: built without re-validation, as
            # a whole mission can hold tens of thousands of attempts.
            values = {name: getattr(row, name) for name in repository.CREEP_COLUMNS}
            attempts.append(CreepAttempt.model_construct(**values))
        elif row.part == "total":
            total = row.n
        else:
            sections[row.part][row.key] = row.n
    attempts.sort(key=lambda attempt: attempt.seq)
    creep_actors: dict[str | None, int] = {}
    for attempt in attempts:
        creep_actors[attempt.actor] = creep_actors.get(attempt.actor, 0) + 1
    return DenialsReport(
        mission_creep=MissionCreep(
            attempts=len(attempts),
            denied=sum(1 for attempt in attempts if attempt.decision == "deny"),
            by_actor=[ActorCount(actor=a, count=n) for a, n in _ranked(creep_actors)],
            events=attempts,
        ),
        denied=total,
        by_reason=[ReasonCount(reason=str(r), count=n) for r, n in _ranked(sections["reason"])],
        by_actor=[ActorCount(actor=a, count=n) for a, n in _ranked(sections["actor"])],
        by_facility=[FacilityCount(facility=f, count=n) for f, n in _ranked(sections["facility"])],
        kinds=list(selected.kinds),
        since=selected.since,
        until=selected.until,
    )


def flags_report(session: Session, context: AppContext, query: FlagsQuery) -> FlagsReport:
    """Flagged access events with their review state and latest disposition, a page at a time."""
    scope = "flags"
    after = decode_cursor(context, scope, query, query.cursor)
    selected = criteria(query, context.policy.timezone, ACCESS_KINDS)
    rows = repository.flagged(
        session,
        selected,
        status=query.status,
        after=after,
        limit=query.limit + 1,
        newest_first=query.newest_first,
    )
    counts = next(row for row in rows if row.part == "counts")
    items = sorted(
        (row for row in rows if row.part == "item"),
        key=lambda row: row.seq,
        reverse=query.newest_first,
    )
    more = len(items) > query.limit
    items = items[: query.limit]
    return FlagsReport(
        open=counts.open or 0,
        reviewed=counts.reviewed or 0,
        items=[_flagged_event(row) for row in items],
        next_cursor=encode_cursor(context, scope, query, items[-1].seq) if more else None,
    )


def _flagged_event(row: Row[Any]) -> FlaggedEvent:
    values = {
        name: getattr(row, name)
        for name in repository.FLAGGED_COLUMNS
        if name not in ("reasons", "details")
    }
    latest = None
    if row.review_seq is not None:
        details = row.review_details or {}
        latest = ReviewRead(
            seq=row.review_seq,
            event_id=row.review_event_id,
            reviewed_seq=row.seq,
            disposition=str(details.get("disposition")),
            note=details.get("note"),
            reviewer=row.reviewer,
            reviewed_at=row.reviewed_at,
        )
    return FlaggedEvent(
        **values,
        reasons=explain(row.reasons, row.details or {}),
        status="reviewed" if latest else "open",
        reviews=row.reviews or 0,
        latest_review=latest,
    )


def review_read(review: Event) -> ReviewRead:
    details = review.details
    return ReviewRead(
        seq=review.seq,
        event_id=review.event_id,
        reviewed_seq=int(details["reviewed_seq"]),
        disposition=str(details["disposition"]),
        note=details.get("note"),
        reviewer=review.actor,
        reviewed_at=review.occurred_at,
    )


def add_review(
    session: Session,
    context: AppContext,
    officer: Principal,
    seq: int,
    body: ReviewCreate,
    source_ip: str | None,
) -> ReviewRead:
    """Record an officer's disposition of an access event, as a `review` event."""
    event = _event(session, seq)
    if event.kind not in ACCESS_KINDS:
        raise Invalid(
            ["path", "seq"],
            f"event {seq} is a {event.kind} event; only access events "
            f"({', '.join(ACCESS_KINDS)}) are reviewed",
        )
    now = context.clock()
    details = {"reviewed_seq": seq, "disposition": body.disposition, "note": body.note}
    [appended] = context.ledger.append(
        session,
        now,
        [
            NewEvent(
                kind="review",
                occurred_at=now,
                actor=officer.name,
                actor_roles=sorted(officer.roles),
                action="review",
                record_type="event",
                record_id=str(seq),
                source=officer.name,
                source_ip=source_ip,
                details=details,
            )
        ],
    )
    session.flush()
    return ReviewRead(
        seq=appended.seq,
        event_id=appended.event_id,
        reviewed_seq=seq,
        disposition=body.disposition,
        note=body.note,
        reviewer=officer.name,
        reviewed_at=now,
    )


def list_reviews(session: Session, seq: int) -> list[ReviewRead]:
    """Every review of event `seq`, oldest first."""
    _event(session, seq)
    return [review_read(review) for review in repository.reviews_of(session, seq)]
