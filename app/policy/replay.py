"""Judging logged decisions and reports again, from the facts they recorded.

Each decision and report event records in `details.facts` what the rules saw: the
actor's facts (`evaluator.actor_facts`) and the distinct records in the volume window.
With the event's own request fields, its instant (`occurred_at`) and, for a report, when
it was reported (`recorded_at`), that is everything a judgement depends on, so

- `replay` judges each event under the version it records and must find what the log
  says (the log proves its decisions follow from its rules);
- `impact` judges a period under another version and says what would change.

Both read the log as a stream (rows fetched in batches) and keep nothing per event but
the page of changes they report: memory stays flat however long the period.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from app.ledger.models import Event
from app.policy.evaluator import (
    AccessRequest,
    ActorProfile,
    CompiledPolicy,
    Judgement,
    profile_from_facts,
)
from app.vocabulary import ACCESS_KINDS, Kind

BATCH: Final = 2000
COLUMNS: Final = (
    Event.seq, Event.kind, Event.occurred_at, Event.recorded_at, Event.actor, Event.action,
    Event.record_type, Event.record_id, Event.facility, Event.purpose, Event.justification,
    Event.break_glass, Event.decision, Event.reasons, Event.flags, Event.policy_version,
    Event.details,
)  # fmt: skip


def access_rows(
    session: Session,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int | None = None,
) -> Iterator[Row[Any]]:
    """The decision and report events that occurred in [since, until), in seq order,
    after seq `after`, fetched in batches."""
    query = select(*COLUMNS).where(Event.kind.in_(ACCESS_KINDS)).order_by(Event.seq)
    if since is not None:
        query = query.where(Event.occurred_at >= since)
    if until is not None:
        query = query.where(Event.occurred_at < until)
    if after is not None:
        query = query.where(Event.seq > after)
    yield from session.execute(query.execution_options(yield_per=BATCH))


@dataclass(frozen=True, slots=True)
class Outcome:
    """An event as logged and as judged again."""

    seq: int
    kind: str
    occurred_at: datetime
    actor: str | None
    was: tuple[str, tuple[str, ...], tuple[str, ...]]  # decision, reasons, flags
    now: tuple[str, tuple[str, ...], tuple[str, ...]]

    @property
    def changed(self) -> bool:
        return self.was != self.now


class Rejudge:
    """Judges logged rows again; profiles rebuilt from identical facts are reused."""

    def __init__(self) -> None:
        self._profiles: dict[tuple[str, str], ActorProfile | None] = {}

    def profile(self, actor: str, facts: Any) -> ActorProfile | None:
        key = (actor, repr(facts))
        if key in self._profiles:
            return self._profiles[key]
        if len(self._profiles) > 10_000:  # bounded: memory stays flat
            self._profiles.clear()
        profile = self._profiles[key] = profile_from_facts(actor, facts)
        return profile

    def judge(self, policy: CompiledPolicy, row: Row[Any]) -> Judgement | None:
        """The row judged under `policy` from its recorded facts; None without facts."""
        facts = (row.details or {}).get("facts")
        if not isinstance(facts, dict):
            return None
        request = AccessRequest(
            action=row.action or "", facility=row.facility or "", purpose=row.purpose or "",
            record_type=row.record_type or "", record_id=row.record_id or "",
            justification=row.justification, break_glass=bool(row.break_glass),
        )  # fmt: skip
        return policy.judge(
            self.profile(row.actor or "", facts.get("actor")),
            request,
            row.occurred_at,
            reported_at=row.recorded_at if row.kind == Kind.report.value else None,
            distinct_records_in_window=int(facts.get("distinct_records", 1)),
        )

    def outcome(self, policy: CompiledPolicy, row: Row[Any]) -> Outcome | None:
        judgement = self.judge(policy, row)
        if judgement is None:
            return None
        return Outcome(
            seq=row.seq,
            kind=row.kind,
            occurred_at=row.occurred_at,
            actor=row.actor,
            was=(row.decision or "", tuple(row.reasons), tuple(row.flags)),
            now=(
                judgement.decision,
                tuple(judgement.reason_codes),
                tuple(f.value for f in judgement.flags),
            ),
        )
