"""Reading the log, the oversight reports and reviews: the rules between router and queries.

Time filters apply to `occurred_at`: `since` is inclusive, `until` exclusive; a bare date
is a facility-local day (`since` from its start, `until` through its end). Reports count
access events (kinds `decision` and `report`) unless a `kind` is given. Cursors are opaque:
a signed `seq` bound to the query that produced it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import Row
from sqlalchemy.orm import Session

from app.auth.principal import Principal
from app.clock import Clock
from app.errors import Invalid, NotFound
from app.ledger.models import Event
from app.ledger.schemas import explain
from app.ledger.service import Ledger, NewEvent
from app.pagination import Cursors, int_key
from app.policy.book import PolicyBook
from app.policy.evaluator import CompiledPolicy
from app.reports import repository
from app.reports.repository import Criteria
from app.reports.schemas import (
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
from app.vocabulary import ACCESS_KINDS, Kind

READ_FIELDS = tuple(EventRead.model_fields)
# The end of time as a UTC timestamp column holds it (a bound past 9999-12-31 in UTC).
LATEST = datetime.max.replace(tzinfo=UTC)


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
    if end_of_day and value == date.max:
        return LATEST
    day = value + timedelta(days=1) if end_of_day else value
    start = datetime(day.year, day.month, day.day, tzinfo=timezone)
    try:
        start.astimezone(UTC)
    except OverflowError:  # a day at the end of 9999 can begin after what UTC can express
        return LATEST
    return start


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
        kinds=_kinds(filters.kind, default_kinds),
        flag=filters.flag.value if filters.flag else None,
        reason=filters.reason.value if filters.reason else None,
        since=since,
        until=until,
    )


def _kinds(kind: str | None, default_kinds: Sequence[str]) -> tuple[str, ...]:
    if kind == "access":
        return ACCESS_KINDS
    return (kind,) if kind else tuple(default_kinds)


def event_read(event: Event) -> BaseModel:
    values = {name: getattr(event, name) for name in READ_FIELDS if name != "reasons"}
    return EventRead(**values, reasons=explain(event.reasons, event.details))


def _sort_key(values: Sequence[Any]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, str(value or "")) for value in values)


def _ranked(counts: Mapping[str | None, int]) -> list[tuple[str | None, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0] is None, item[0] or ""))


def _query(query: Any) -> dict[str, Any]:
    """A query's parameters as JSON values (what its cursors are bound to)."""
    values: dict[str, Any] = query.model_dump(mode="json")
    return values


class Reports:
    """Reading the log, the oversight reports and reviews."""

    @property
    def policy(self) -> CompiledPolicy:
        """The version in force now (as of the book's last refresh)."""
        return self.book.at(self.clock())

    def __init__(self, book: PolicyBook, ledger: Ledger, clock: Clock, cursors: Cursors) -> None:
        self.book = book
        self.ledger = ledger
        self.clock = clock
        self.cursors = cursors

    def criteria(self, filters: EventFilters, default_kinds: Sequence[str] = ()) -> Criteria:
        return criteria(filters, self.policy.timezone, default_kinds)

    def list_events(self, session: Session, query: EventQuery) -> EventPage:
        """A page of events matching the filters, in seq order."""
        params = _query(query)
        after = int_key(self.cursors.decode("events", params, query.cursor))
        selected = self.criteria(query)
        rows = repository.events_page(session, selected, after=after, limit=query.limit + 1)
        events, next_cursor = self.cursors.page(
            rows, query.limit, "events", params, lambda e: e.seq
        )
        return EventPage(items=[event_read(e) for e in events], next_cursor=next_cursor)

    def get_event(self, session: Session, seq: int) -> BaseModel:
        return event_read(_event(session, seq))

    def record_accesses(
        self, session: Session, record_type: str, record_id: str, query: AccessQuery
    ) -> AccessPage:
        """The accounting of disclosures: every decision and reported access to one record."""
        scope = f"accesses\n{record_type}\n{record_id}"
        params = _query(query)
        after = int_key(self.cursors.decode(scope, params, query.cursor))
        since, until = period(query.since, query.until, self.policy.timezone)
        selected = Criteria(
            record_type=record_type, record_id=record_id, kinds=ACCESS_KINDS, since=since,
            until=until,
        )  # fmt: skip
        rows = repository.events_page(session, selected, after=after, limit=query.limit + 1)
        events, next_cursor = self.cursors.page(rows, query.limit, scope, params, lambda e: e.seq)
        return AccessPage(
            record_type=record_type,
            record_id=record_id,
            items=[
                AccessRead(
                    **{n: getattr(e, n) for n in AccessRead.model_fields if n != "reasons"},
                    reasons=explain(e.reasons, e.details),
                )
                for e in events
            ],
            next_cursor=next_cursor,
        )

    def summary_report(self, session: Session, query: SummaryQuery) -> SummaryReport:
        """Counts per group (an event counts once per role it was recorded with)."""
        timezone = self.policy.timezone
        selected = self.criteria(query, ACCESS_KINDS)
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

    def denials_report(self, session: Session, query: DenialsQuery) -> DenialsReport:
        """Denials by reason, actor and facility, after every Guard sworn/enforcement attempt."""
        policy = self.policy
        selected = self.criteria(query, ACCESS_KINDS)
        rows = repository.denials(
            session, selected, sorted(policy.guard_roles), sorted(policy.guard_forbidden)
        )
        creep: list[Row[Any]] = []
        sections: dict[str, dict[str | None, int]] = {"reason": {}, "actor": {}, "facility": {}}
        total = 0
        for row in rows:
            if row.part == "creep":
                creep.append(row)
            elif row.part == "total":
                total = row.n
            else:
                sections[row.part][row.key] = row.n
        creep.sort(key=lambda row: row.seq)
        creep_actors: dict[str | None, int] = {}
        for row in creep:
            creep_actors[row.actor] = creep_actors.get(row.actor, 0) + 1
        return DenialsReport(
            mission_creep=MissionCreep(
                attempts=len(creep),
                denied=sum(1 for row in creep if row.decision == "deny"),
                by_actor=[ActorCount(actor=a, count=n) for a, n in _ranked(creep_actors)],
                # Typed columns straight from the database: built without re-validation, as
                # a whole mission can hold tens of thousands of attempts.
                events=[
                    CreepAttempt.model_construct(
                        **{n: getattr(row, n) for n in repository.CREEP_COLUMNS}
                    )
                    for row in creep
                ],
            ),
            denied=total,
            by_reason=[ReasonCount(reason=str(r), count=n) for r, n in _ranked(sections["reason"])],
            by_actor=[ActorCount(actor=a, count=n) for a, n in _ranked(sections["actor"])],
            by_facility=[
                FacilityCount(facility=f, count=n) for f, n in _ranked(sections["facility"])
            ],
            kinds=list(selected.kinds),
            since=selected.since,
            until=selected.until,
        )

    def flags_report(self, session: Session, query: FlagsQuery) -> FlagsReport:
        """Flagged access events with their review state and latest disposition, paged."""
        params = _query(query)
        after = int_key(self.cursors.decode("flags", params, query.cursor))
        selected = self.criteria(query, ACCESS_KINDS)
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
        page, next_cursor = self.cursors.page(
            items, query.limit, "flags", params, lambda row: row.seq
        )
        return FlagsReport(
            open=counts.open or 0,
            reviewed=counts.reviewed or 0,
            follow_up=counts.follow_up or 0,
            items=[_flagged_event(row) for row in page],
            next_cursor=next_cursor,
        )

    def add_review(
        self,
        session: Session,
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
        now = self.clock()
        details = {"reviewed_seq": seq, "disposition": body.disposition, "note": body.note}
        review = NewEvent(
            kind=Kind.review.value,
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
        [appended] = self.ledger.append(session, now, [review])
        return ReviewRead(
            seq=appended.seq,
            event_id=appended.event_id,
            reviewed_seq=seq,
            disposition=body.disposition,
            note=body.note,
            reviewer=officer.name,
            reviewed_at=now,
        )

    def list_reviews(self, session: Session, seq: int) -> list[ReviewRead]:
        """Every review of event `seq`, oldest first."""
        _event(session, seq)
        return [review_read(review) for review in repository.reviews_of(session, seq)]


def _event(session: Session, seq: int) -> Event:
    event = repository.event_by_seq(session, seq)
    if event is None:
        raise NotFound(f"no event {seq}")
    return event


def _flagged_event(row: Row[Any]) -> BaseModel:
    values = {name: getattr(row, name) for name in repository.FLAGGED_FIELDS if name != "reasons"}
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
