"""Judging logged decisions and reports again, from the facts they recorded.

Each decision and report event records in `details.facts` what the rules saw: the
actor's facts (`evaluator.actor_facts`) and the distinct records in the volume window.
With the event's own request fields, its instant (`occurred_at`) and, for a report, when
it was reported (`recorded_at`), that is everything a judgement depends on, so

- `replay` judges each event under the version it records and must find what the log
  says (the log proves its decisions follow from its rules);
- `impact` judges a period under another version and says what would change.

Both read the log as a stream (rows fetched in batches, through Core: no ORM loading)
and keep nothing per event but the page of changes they report: memory stays flat however
long the period.

A log repeats itself: the same actor, with the same facts, doing the same thing on the
same day. So `Rejudge` reads `details` as its JSON text (`details_json`) and decodes each
distinct text once, and remembers each judgement under everything it depends on
(`Rejudge.compare`), so that an event like one judged before costs a lookup. Both memories
are bounded (cleared when full), so memory stays flat; a miss costs what it always did.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import Result, Row, Text, cast, select
from sqlalchemy.orm import Session

from app.ledger.models import Event
from app.policy.evaluator import (
    AccessRequest,
    ActorProfile,
    CompiledPolicy,
    Judgement,
    Reason,
    profile_from_facts,
)
from app.vocabulary import ACCESS_KINDS, Kind

BATCH: Final = 2000
MEMORY: Final = 16_384  # distinct facts texts, and distinct judgements, remembered
COLUMNS: Final = (
    Event.seq, Event.kind, Event.occurred_at, Event.recorded_at, Event.actor, Event.action,
    Event.record_type, Event.record_id, Event.facility, Event.purpose, Event.justification,
    Event.break_glass, Event.decision, Event.reasons, Event.flags, Event.policy_version,
    cast(Event.details, Text).label("details_json"),  # decoded by Rejudge, once per text
)  # fmt: skip


def access_rows(
    session: Session,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int | None = None,
) -> Iterator[Row[Any]]:
    """The decision and report events that occurred in [since, until), in seq order,
    after seq `after`, fetched in batches; `details` as its JSON text (`details_json`)."""
    query = select(*COLUMNS).where(Event.kind.in_(ACCESS_KINDS)).order_by(Event.seq)
    if since is not None:
        query = query.where(Event.occurred_at >= since)
    if until is not None:
        query = query.where(Event.occurred_at < until)
    if after is not None:
        query = query.where(Event.seq > after)
    # Core, not the ORM: the same rows, without the ORM's loading.
    rows: Result[Any] = session.connection().execute(query.execution_options(yield_per=BATCH))
    yield from rows


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


Judged = tuple[str, tuple[str, ...], tuple[str, ...]]  # decision, reasons, flags


class Rejudge:
    """Judges logged rows again; the facts of each distinct `details` text are decoded
    once, and each distinct judgement is made once (see the module's docstring)."""

    def __init__(self) -> None:
        # (actor, details text) -> (the profile its facts describe, the distinct records,
        # a token for them never given to other facts) or None without facts
        self._facts: dict[tuple[str, str], tuple[ActorProfile | None, int, int] | None] = {}
        self._tokens = itertools.count()
        # (version, facts token) -> the days on which the evaluation may change
        self._turning: dict[tuple[str, int], tuple[date, ...]] = {}
        # what `evaluate` depends on -> what it found
        self._evaluated: dict[tuple[Any, ...], tuple[list[Reason], str | None]] = {}
        # that, and what the flags depend on -> the judgement, as `Outcome.now`
        self._judged: dict[tuple[Any, ...], Judged] = {}

    def facts(
        self, actor: str, details_json: str | None
    ) -> tuple[ActorProfile | None, int, int] | None:
        """The profile and the distinct records in the window that a row's details record
        (and their token); None without facts."""
        key = (actor, details_json or "")
        try:
            return self._facts[key]
        except KeyError:
            pass
        if len(self._facts) >= MEMORY:  # bounded: memory stays flat
            self._facts.clear()
        details = json.loads(details_json) if details_json else None
        facts = details.get("facts") if isinstance(details, dict) else None
        found = None
        if isinstance(facts, dict):
            found = (
                profile_from_facts(actor, facts.get("actor")),
                int(facts.get("distinct_records", 1)),
                next(self._tokens),
            )
        self._facts[key] = found
        return found

    def judge(self, policy: CompiledPolicy, row: Row[Any]) -> Judgement | None:
        """The row judged under `policy` from its recorded facts; None without facts."""
        facts = self.facts(row.actor or "", row.details_json)
        if facts is None:
            return None
        profile, distinct, _ = facts
        request = AccessRequest(
            action=row.action or "", facility=row.facility or "", purpose=row.purpose or "",
            record_type=row.record_type or "", record_id=row.record_id or "",
            justification=row.justification, break_glass=bool(row.break_glass),
        )  # fmt: skip
        return policy.judge(
            profile, request, row.occurred_at,
            reported_at=row.recorded_at if row.kind == Kind.report.value else None,
            distinct_records_in_window=distinct,
        )  # fmt: skip

    def compare(self, policy: CompiledPolicy, row: Row[Any]) -> tuple[Judged, Judged] | None:
        """(as logged, as judged again) of a row of `access_rows`; None without facts.

        `judge`, remembered: what `evaluate` found, under everything it depends on (the
        version; the actor and the recorded facts; the request's fields but the record,
        which no rule reads; the local date, the only way it reads the instant, as far as
        it matters: its span of `CompiledPolicy.turning_days`) — the reasons' messages may
        then name another day of the span, but only their codes are read; and the
        judgement, under that and what the flags add (after hours; whether it is a report,
        and whether late; the volume count is in the facts)."""
        values: Any = row  # unpacked at once: the columns of COLUMNS, in order
        (_seq, kind, occurred_at, recorded_at, actor, action, _record_type, _record_id,
         facility, purpose, justification, break_glass, decision, reasons, flags,
         _version, details_json) = values  # fmt: skip
        facts = self.facts(actor or "", details_json)
        if facts is None:
            return None
        was = (decision or "", tuple(reasons), tuple(flags))
        profile, distinct, token = facts
        day, after_hours = policy.day_and_hours(occurred_at)
        reported_at = recorded_at if kind == Kind.report.value else None
        turning = self._turning.get((policy.version, token))
        if turning is None:
            if len(self._turning) >= MEMORY:  # bounded: memory stays flat
                self._turning.clear()
            turning = self._turning[policy.version, token] = policy.turning_days(profile)
        evaluation = (policy.version, token, action, facility, purpose, justification,
                      break_glass, policy.span(turning, day))  # fmt: skip
        late = reported_at is not None and policy.is_late(occurred_at, reported_at)
        key = (evaluation, after_hours, reported_at is not None, late)
        now = self._judged.get(key)
        if now is not None:
            return was, now
        evaluated = self._evaluated.get(evaluation)
        if evaluated is None:
            request = AccessRequest(
                action=action or "", facility=facility or "", purpose=purpose or "",
                record_type=_record_type or "", record_id=_record_id or "",
                justification=justification, break_glass=bool(break_glass),
            )  # fmt: skip
            if len(self._evaluated) >= MEMORY:  # bounded: memory stays flat
                self._evaluated.clear()
            evaluated = self._evaluated[evaluation] = policy.evaluate(profile, request, occurred_at)
        judgement = policy.conclude(
            *evaluated, bool(break_glass), occurred_at, reported_at=reported_at,
            distinct_records_in_window=distinct,
        )  # fmt: skip
        if len(self._judged) >= MEMORY:
            self._judged.clear()
        now = self._judged[key] = (
            judgement.decision,
            tuple(judgement.reason_codes),
            tuple(f.value for f in judgement.flags),
        )
        return was, now

    def outcome(self, policy: CompiledPolicy, row: Row[Any]) -> Outcome | None:
        compared = self.compare(policy, row)
        if compared is None:
            return None
        return Outcome(row.seq, row.kind, row.occurred_at, row.actor, *compared)
