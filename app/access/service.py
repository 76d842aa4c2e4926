"""Judge access requests against the mission policy and append them to the log.

Both paths take the ledger lock first, so the idempotency check, the volume count and the
append see one consistent log, and two requests can never both think they are first.
Decisions arrive one per request but are written in groups (`app.access.queue`): a group
is judged at one instant and appended in one transaction, in the order it arrived.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from app.access import repository
from app.access.schemas import (
    DecisionRequest,
    DecisionResult,
    EventBatch,
    EventResult,
)
from app.context import AppContext
from app.db import Read, read_together
from app.deps import Principal
from app.errors import Invalid, Unauthorized
from app.ledger import repository as ledger_repo
from app.ledger.models import Event
from app.ledger.schemas import ReasonRead, explain
from app.ledger.service import Appended, NewEvent
from app.policy.evaluator import AccessRequest, ActorProfile, Judgement
from app.users import repository as users_repo
from app.users.service import actor_profiles, profiles_from_rows

MAX_FUTURE = timedelta(minutes=5)

# (source, client_event_id): what makes a request a repeat of one already logged
IdempotencyKey = tuple[str, str]
_Result = TypeVar("_Result", DecisionResult, EventResult)


@dataclass(frozen=True, slots=True)
class Ask:
    """One decision request: who sent it, what it asks, and from which address."""

    caller: Principal
    body: DecisionRequest
    source_ip: str | None


def decide(
    session: Session, context: AppContext, asks: Sequence[Ask]
) -> list[DecisionResult | Unauthorized]:
    """Judge `asks` at the server's clock and append them in order; results in that order.

    An integration client is checked here, in the transaction that appends its decisions:
    an ask from a client that is unknown or no longer active appends nothing and gets
    `Unauthorized`. An ask that repeats a logged `(caller, client_event_id)`, or an earlier
    ask of the same group, appends nothing and answers with the first one's result, marked
    `duplicate`.
    """
    now = context.clock()
    # Read before the lock (the lock covers only what the log decides), together: the
    # clients, and the actors' profiles (of every ask, refused ones included).
    clients = users_repo.active_client_reads(
        session, {ask.caller.name for ask in asks if ask.caller.kind == "client"}
    )
    actors = users_repo.actor_reads(session, {ask.body.actor for ask in asks})
    rows = read_together(session, [*clients, *actors])
    active = {client_id for found in rows[: len(clients)] for (client_id,) in found}
    profiles = profiles_from_rows(row for found in rows[len(clients) :] for row in found)
    admitted = [
        i for i, ask in enumerate(asks) if ask.caller.kind != "client" or ask.caller.name in active
    ]
    taken = [asks[i] for i in admitted]
    keys = [_key(ask) for ask in taken]
    written = _judge_and_append(
        session, context, "decision", now, profiles, keys,
        [(ask.caller, ask.body, now, ask.source_ip) for ask in taken],
    )  # fmt: skip
    answers = iter(written.answers(
        keys,
        lambda judgement, event, appended: DecisionResult(
            decision=judgement.decision,
            reasons=[ReasonRead(code=r.code.value, message=r.message) for r in judgement.reasons],
            seq=appended.seq, event_id=appended.event_id, flags=list(event.flags),
            policy_version=context.policy.version,
        ),
        _decision_result,
    ))  # fmt: skip
    admitted_at = set(admitted)
    return [
        next(answers) if i in admitted_at else Unauthorized("invalid or expired token")
        for i in range(len(asks))
    ]


def _key(ask: Ask) -> IdempotencyKey | None:
    cid = ask.body.client_event_id
    return None if cid is None else (ask.caller.name, cid)


def report(
    session: Session,
    context: AppContext,
    caller: Principal,
    batch: EventBatch,
    source_ip: str | None,
) -> list[EventResult]:
    """Judge each reported event as of its `occurred_at`; append all of them or none."""
    now = context.clock()
    for i, item in enumerate(batch.events):
        if item.occurred_at > now + MAX_FUTURE:
            raise Invalid(["body", "events", i, "occurred_at"],
                          "occurred_at is more than 5 minutes in the future")  # fmt: skip
    # Read before the lock: the lock covers only what the log decides.
    profiles = actor_profiles(session, {item.actor for item in batch.events})
    keys = [(caller.name, item.client_event_id) for item in batch.events]
    written = _judge_and_append(
        session, context, "report", now, profiles, keys,
        [(caller, item, item.occurred_at, source_ip) for item in batch.events],
    )  # fmt: skip
    return written.answers(
        keys,
        lambda judgement, event, appended: EventResult(
            client_event_id=event.client_event_id or "", seq=appended.seq,
            event_id=appended.event_id, decision=judgement.decision,
            reasons=judgement.reason_codes, flags=list(event.flags), duplicate=False,
        ),
        _event_result,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Written:
    """What `_judge_and_append` did with a list of requests."""

    known: dict[IdempotencyKey, Event]  # keys logged by an earlier request: their events
    first: dict[IdempotencyKey, int]  # new keys: the position of their first request
    appended: dict[int, tuple[Judgement, NewEvent, Appended]]  # position -> its new event

    def answers(
        self,
        keys: Sequence[IdempotencyKey | None],
        new: Callable[[Judgement, NewEvent, Appended], _Result],
        logged: Callable[[Event], _Result],
    ) -> list[_Result]:
        """One result per position: a new event's (`new`); for a key logged by an earlier
        request, that event's (`logged`, marked duplicate); for a key repeated within the
        list, its first position's result, marked duplicate."""
        made = {i: new(*entry) for i, entry in self.appended.items()}
        results: list[_Result] = []
        for i, key in enumerate(keys):
            if i in made:  # a position without a key is always new
                results.append(made[i])
            elif key in self.known:
                results.append(logged(self.known[key]))
            else:
                assert key is not None
                results.append(made[self.first[key]].model_copy(update={"duplicate": True}))
        return results


def _judge_and_append(
    session: Session,
    context: AppContext,
    kind: str,
    now: datetime,
    profiles: dict[str, ActorProfile],
    keys: Sequence[IdempotencyKey | None],
    requests: Sequence[tuple[Principal, DecisionRequest, datetime, str | None]],
) -> _Written:
    """Judge each (caller, request, as of, address) and append them in order, under the
    ledger lock; except a request whose key (None: no key) was logged before or is repeated
    from an earlier position, which appends nothing.

    What the lock must cover is read with it, in one round trip on PostgreSQL: which keys
    are logged, and for requests made at one instant, their window's counts.
    """
    if not requests:
        return _Written({}, {}, {})
    probes = ledger_repo.known_seq_reads(session, {key for key in keys if key})
    at = requests[0][2]
    one_instant = all(when == at for _, _, when, _ in requests)
    windows = (
        _window_reads(context, [body for _, body, _, _ in requests], at)
        if one_instant and repository.counts_windows(session)
        else []
    )
    locked = context.ledger.lock(session, [*probes, *windows])
    known = ledger_repo.events_at(
        session, {row[0] for rows in locked.rows[: len(probes)] for row in rows}
    )
    fresh: list[int] = []
    first: dict[IdempotencyKey, int] = {}
    for i, key in enumerate(keys):
        if key is None:
            fresh.append(i)
        elif key not in known and key not in first:
            first[key] = i
            fresh.append(i)
    new = [requests[i] for i in fresh]
    counts = (
        _counted([body for _, body, _, _ in new], locked.rows[len(probes) :])
        if windows
        else _distinct_records_sweep(session, context, [(body, when) for _, body, when, _ in new])
    )
    judged: list[tuple[Judgement, NewEvent]] = []
    for (caller, body, when, source_ip), count in zip(new, counts, strict=True):
        profile = profiles.get(body.actor)
        judgement = context.policy.judge(
            profile, _request(body), when, reported_at=now if kind == "report" else None,
            distinct_records_in_window=count,
        )  # fmt: skip
        event = _new_event(kind, body, when, profile, judgement, context, caller, source_ip)
        judged.append((judgement, event))
    appended = context.ledger.append(session, now, [event for _, event in judged], locked)
    return _Written(known, first, {
        i: (judgement, event, added)
        for i, (judgement, event), added in zip(fresh, judged, appended, strict=True)
    })  # fmt: skip


def _request(body: DecisionRequest) -> AccessRequest:
    return AccessRequest(
        action=body.action, facility=body.record.facility, purpose=body.purpose,
        record_type=body.record.type, record_id=body.record.id,
        justification=body.justification, break_glass=body.break_glass,
    )  # fmt: skip


def _new_event(
    kind: str,
    body: DecisionRequest,
    occurred_at: datetime,
    profile: ActorProfile | None,
    judgement: Judgement,
    context: AppContext,
    caller: Principal,
    source_ip: str | None,
) -> NewEvent:
    details: dict[str, Any] = {}
    if judgement.reasons:
        details["reasons"] = [{"code": r.code.value, "message": r.message}
                              for r in judgement.reasons]  # fmt: skip
    return NewEvent(
        kind=kind, occurred_at=occurred_at, actor=body.actor,
        actor_roles=list(profile.roles) if profile else [], action=body.action,
        action_category=judgement.category, record_type=body.record.type,
        record_id=body.record.id, facility=body.record.facility, purpose=body.purpose,
        justification=body.justification, break_glass=body.break_glass,
        decision=judgement.decision, reasons=judgement.reason_codes,
        flags=[f.value for f in judgement.flags], source=caller.name,
        client_event_id=body.client_event_id, policy_version=context.policy.version,
        workstation=body.workstation, source_ip=source_ip, details=details,
    )  # fmt: skip


# (occurred_at, index of the request it answers for or -1 for a logged one, record)
_Touch = tuple[datetime, int, tuple[str | None, str | None]]
_WHEN = itemgetter(0, 1)  # logged touches sort before requests at the same instant


def _distinct_records_sweep(
    session: Session, context: AppContext, requests: Sequence[tuple[DecisionRequest, datetime]]
) -> list[int]:
    """The volume count of each (request, as of): distinct records its actor touched in the
    trailing window, itself and the earlier requests of the list included; a sliding window
    per actor over its logged accesses.

    Requests made at one instant (a group of decisions) share their window: where the
    database counts windows, the ledger lock reads that count instead (`_counted`).
    """
    window = context.policy.volume_window
    by_actor: dict[str, list[_Touch]] = defaultdict(list)
    for i, (body, at) in enumerate(requests):
        by_actor[body.actor].append((at, i, (body.record.type, body.record.id)))
    spans = [
        (actor, min(t[0] for t in ts) - window, max(t[0] for t in ts))
        for actor, ts in by_actor.items()
    ]
    for actor, logged in repository.touches(session, spans).items():
        by_actor[actor].extend((at, -1, (rt, rid)) for at, rt, rid in logged)
    counts = [0] * len(requests)
    for touches in by_actor.values():
        touches.sort(key=_WHEN)  # stable: requests keep their order
        live: dict[tuple[str | None, str | None], int] = defaultdict(int)
        left = 0
        for at, query, record in touches:
            live[record] += 1
            horizon = at - window
            while touches[left][0] <= horizon:
                gone = touches[left][2]
                live[gone] -= 1
                if not live[gone]:
                    del live[gone]
                left += 1
            if query >= 0:
                counts[query] = len(live)
    return counts


def _distinct_records_at(
    session: Session, context: AppContext, bodies: Sequence[DecisionRequest], at: datetime
) -> list[int]:
    """The volume counts of requests all made at `at`, from the database's count: the
    sweep's answer (where `repository.counts_windows`)."""
    return _counted(bodies, read_together(session, _window_reads(context, bodies, at)))


def _window_reads(
    context: AppContext, bodies: Sequence[DecisionRequest], at: datetime
) -> list[Read]:
    touched = {(body.actor, body.record.type, body.record.id) for body in bodies}
    return repository.window_reads(touched, at - context.policy.volume_window, at)


def _counted(
    bodies: Sequence[DecisionRequest], rows: Sequence[Sequence[tuple[Any, ...]]]
) -> list[int]:
    """Volume counts for `bodies`, in order, from the rows of their window's reads."""
    logged, known = repository.window_counts(rows)
    added: dict[str, set[tuple[str, str]]] = defaultdict(set)
    counts: list[int] = []
    for body in bodies:
        touched = (body.actor, body.record.type, body.record.id)
        if touched not in known:
            added[body.actor].add(touched[1:])
        counts.append(logged.get(body.actor, 0) + len(added[body.actor]))
    return counts


def _decision_result(event: Event) -> DecisionResult:
    """A logged decision's answer to a request that repeats it."""
    return DecisionResult(
        decision=event.decision or "", reasons=explain(event.reasons, event.details), seq=event.seq,
        event_id=event.event_id, flags=list(event.flags),
        policy_version=event.policy_version or "", duplicate=True,
    )  # fmt: skip


def _event_result(event: Event) -> EventResult:
    """A logged event's answer to a report that repeats it."""
    return EventResult(
        client_event_id=event.client_event_id or "", seq=event.seq, event_id=event.event_id,
        decision=event.decision or "", reasons=list(event.reasons), flags=list(event.flags),
        duplicate=True,
    )  # fmt: skip
