"""Judge access requests against the mission policy and append them to the log.

Decisions and reports take one path: read the actors' profiles, take the ledger lock
(which reads, in the same step, what the log holds under the requests' idempotency keys
and the actors' volume windows), judge each new request, append. The lock covers the
check and the append, so two requests can never both think they are first. Decisions
arrive one per request but are written in groups (`app.access.queue`): a group is judged
at one instant and appended in one transaction, in the order it arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Final, TypeVar

from sqlalchemy.orm import Session

from app.access.schemas import DecisionRequest, DecisionResult, EventBatch, EventResult
from app.auth.principal import Principal
from app.clock import Clock
from app.errors import Invalid
from app.ledger.append_store import IdempotencyKey, LoggedEvent
from app.ledger.schemas import ReasonRead, explain
from app.ledger.service import Appended, Ledger, NewEvent
from app.policy.book import PolicyBook
from app.policy.evaluator import (
    AccessRequest,
    ActorProfile,
    CompiledPolicy,
    Judgement,
    actor_facts,
)
from app.users import repository as users_repo
from app.vocabulary import Kind

MAX_FUTURE: Final = timedelta(minutes=5)
_Result = TypeVar("_Result", DecisionResult, EventResult)


@dataclass(frozen=True, slots=True)
class Ask:
    """One decision request: who sent it, what it asks, and from which address."""

    caller: Principal
    body: DecisionRequest
    source_ip: str | None

    @property
    def key(self) -> IdempotencyKey | None:
        cid = self.body.client_event_id
        return None if cid is None else (self.caller.name, cid)


@dataclass(frozen=True, slots=True)
class _Request:
    """A request to judge and append: who sent it, what, as of when, from where."""

    caller: Principal
    body: DecisionRequest
    at: datetime
    source_ip: str | None
    key: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class _Written:
    """What `_judge_and_append` did with a list of requests."""

    logged: dict[IdempotencyKey, LoggedEvent]  # keys logged by an earlier request
    first: dict[IdempotencyKey, int]  # new keys: the position of their first request
    appended: dict[int, tuple[Judgement, NewEvent, Appended]]  # position -> its new event

    def answers(
        self,
        keys: Sequence[IdempotencyKey | None],
        new: Callable[[Judgement, NewEvent, Appended], _Result],
        repeat: Callable[[LoggedEvent], _Result],
    ) -> list[_Result]:
        """One result per position: a new event's (`new`); for a key logged by an earlier
        request, that event's (`repeat`, marked duplicate); for a key repeated within the
        list, its first position's result, marked duplicate."""
        made = {i: new(*entry) for i, entry in self.appended.items()}
        results: list[_Result] = []
        for i, key in enumerate(keys):
            if i in made:  # a position without a key is always new
                results.append(made[i])
            elif key in self.logged:
                results.append(repeat(self.logged[key]))
            else:
                assert key is not None
                results.append(made[self.first[key]].model_copy(update={"duplicate": True}))
        return results


class Access:
    """POST /v1/decisions and POST /v1/events: evaluate, flag, append."""

    def __init__(self, book: PolicyBook, ledger: Ledger, clock: Clock) -> None:
        self.book = book
        self.ledger = ledger
        self.clock = clock

    def admitted(self, session: Session, asks: Sequence[Ask]) -> list[bool]:
        """Whether each ask's caller may still decide: a user was checked with its token;
        an integration client must still be registered and active (read in the
        transaction that appends its decisions)."""
        active = users_repo.active_clients(
            session, {ask.caller.name for ask in asks if ask.caller.kind == "client"}
        )
        return [ask.caller.kind != "client" or ask.caller.name in active for ask in asks]

    def decide(self, session: Session, asks: Sequence[Ask]) -> list[DecisionResult]:
        """Judge `asks` at the server's clock and append them in order; results in that order.

        An ask that repeats a logged `(caller, client_event_id)`, or an earlier ask of the
        same list, appends nothing and answers with the first one's result, marked
        `duplicate`.
        """
        now = self.clock()
        requests = [_Request(ask.caller, ask.body, now, ask.source_ip, ask.key) for ask in asks]
        written = self._judge_and_append(session, Kind.decision.value, now, requests)
        return written.answers(
            [request.key for request in requests],
            lambda judgement, event, appended: DecisionResult(
                decision=judgement.decision,
                reasons=[ReasonRead(code=r.code.value, message=r.message,
                                    data=dict(r.data) if r.data else None)
                         for r in judgement.reasons],
                seq=appended.seq, event_id=appended.event_id, flags=list(event.flags),
                policy_version=event.policy_version or "",
            ),
            _decision_result,
        )  # fmt: skip

    def report(
        self, session: Session, caller: Principal, batch: EventBatch, source_ip: str | None
    ) -> list[EventResult]:
        """Judge each reported event as of its `occurred_at`; append all of them or none."""
        now = self.clock()
        for i, item in enumerate(batch.events):
            if item.occurred_at > now + MAX_FUTURE:
                raise Invalid(["body", "events", i, "occurred_at"],
                              "occurred_at is more than 5 minutes in the future")  # fmt: skip
        requests = [
            _Request(caller, item, item.occurred_at, source_ip, (caller.name, item.client_event_id))
            for item in batch.events
        ]
        written = self._judge_and_append(session, Kind.report.value, now, requests)
        return written.answers(
            [request.key for request in requests],
            lambda judgement, event, appended: EventResult(
                client_event_id=event.client_event_id or "", seq=appended.seq,
                event_id=appended.event_id, decision=judgement.decision,
                reasons=judgement.reason_codes, flags=list(event.flags), duplicate=False,
            ),
            _event_result,
        )  # fmt: skip

    def _judge_and_append(
        self, session: Session, kind: str, now: datetime, requests: Sequence[_Request]
    ) -> _Written:
        """Judge each request and append them in order, under the ledger lock; except a
        request whose key was logged before or is repeated from an earlier position, which
        appends nothing."""
        if not requests:
            return _Written({}, {}, {})
        # Read before the lock: the lock covers only what the log decides.
        profiles = users_repo.actor_profiles(session, {r.body.actor for r in requests})
        locked = self.ledger.lock(
            session,
            keys={r.key for r in requests if r.key is not None},
            counted={(r.body.actor, r.at) for r in requests},
        )
        # Under the lock: an approval appended before it is seen (`app.policy.book`).
        book = self.book
        book.refresh(session)
        if book.volume_limit != self.ledger.volume.limit:  # a version raised the threshold
            self.ledger.volume = replace(self.ledger.volume, limit=book.volume_limit)
        fresh: list[int] = []
        first: dict[IdempotencyKey, int] = {}
        for i, request in enumerate(requests):
            if request.key is None:
                fresh.append(i)
            elif request.key not in locked.logged and request.key not in first:
                first[request.key] = i
                fresh.append(i)
        new = [requests[i] for i in fresh]
        counts = locked.window_counts(
            [(r.body.actor, r.body.record.type, r.body.record.id, r.at) for r in new]
        )
        reported_at = now if kind == Kind.report.value else None
        judged: list[tuple[Judgement, NewEvent]] = []
        # An actor's facts are the same all day: built once per actor and local date (a
        # batch of reports is mostly a few people's day; bench/replay.py, facts cost).
        seen: dict[tuple[str, date], dict[str, Any] | None] = {}
        for request, count in zip(new, counts, strict=True):
            profile = profiles.get(request.body.actor)
            policy = book.at(request.at)
            judgement = policy.judge(
                profile, _access(request.body), request.at, reported_at=reported_at,
                distinct_records_in_window=count,
            )  # fmt: skip
            day = (request.body.actor, policy.local_date(request.at))
            if day not in seen:
                seen[day] = actor_facts(profile, day[1])
            facts = {"actor": seen[day], "distinct_records": count}
            judged.append((judgement, _event(kind, request, profile, judgement, policy, facts)))
        appended = locked.append(now, [event for _, event in judged])
        return _Written(locked.logged, first, {
            i: (judgement, event, added)
            for i, (judgement, event), added in zip(fresh, judged, appended, strict=True)
        })  # fmt: skip


def _event(
    kind: str,
    request: _Request,
    profile: ActorProfile | None,
    judgement: Judgement,
    policy: CompiledPolicy,
    facts: dict[str, Any],
) -> NewEvent:
    """The event that records `judgement`: with its reasons (and their data) and the
    facts the rules saw (`details.facts`, which `app.policy.replay` judges again)."""
    body = request.body
    details: dict[str, Any] = {"facts": facts}
    if judgement.reasons:
        details["reasons"] = [r.as_json() for r in judgement.reasons]
    return NewEvent(
            kind=kind, occurred_at=request.at, actor=body.actor,
            actor_roles=list(profile.roles) if profile else [], action=body.action,
            action_category=judgement.category, record_type=body.record.type,
            record_id=body.record.id, facility=body.record.facility, purpose=body.purpose,
            justification=body.justification, break_glass=body.break_glass,
            decision=judgement.decision, reasons=judgement.reason_codes,
            flags=[f.value for f in judgement.flags], source=request.caller.name,
            client_event_id=body.client_event_id, policy_version=policy.version,
            workstation=body.workstation, source_ip=request.source_ip, details=details,
        )  # fmt: skip


def _access(body: DecisionRequest) -> AccessRequest:
    return AccessRequest(
        action=body.action, facility=body.record.facility, purpose=body.purpose,
        record_type=body.record.type, record_id=body.record.id,
        justification=body.justification, break_glass=body.break_glass,
    )  # fmt: skip


def _decision_result(event: LoggedEvent) -> DecisionResult:
    """A logged decision's answer to a request that repeats it."""
    return DecisionResult(
        decision=event.decision or "", reasons=explain(event.reasons, event.details), seq=event.seq,
        event_id=event.event_id, flags=list(event.flags),
        policy_version=event.policy_version or "", duplicate=True,
    )  # fmt: skip


def _event_result(event: LoggedEvent) -> EventResult:
    """A logged event's answer to a report that repeats it."""
    return EventResult(
        client_event_id=event.client_event_id, seq=event.seq, event_id=event.event_id,
        decision=event.decision or "", reasons=list(event.reasons), flags=list(event.flags),
        duplicate=True,
    )  # fmt: skip
