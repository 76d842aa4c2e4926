"""Judge access requests against the mission policy and append them to the log.

Both paths take the ledger lock first, so the idempotency check, the volume count and the
append see one consistent log, and two requests can never both think they are first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy.orm import Session

from app.access import repository
from app.access.schemas import (
    DecisionRequest,
    DecisionResult,
    EventBatch,
    EventResult,
)
from app.context import AppContext
from app.deps import Principal
from app.errors import Invalid
from app.ledger import repository as ledger_repo
from app.ledger.models import Event
from app.ledger.schemas import ReasonRead, explain
from app.ledger.service import NewEvent
from app.policy.evaluator import AccessRequest, ActorProfile, Judgement
from app.users.service import actor_profiles

MAX_FUTURE = timedelta(minutes=5)


def decide(
    session: Session,
    context: AppContext,
    caller: Principal,
    body: DecisionRequest,
    source_ip: str | None,
) -> DecisionResult:
    """Evaluate a request at the server's clock, append the decision, and return it."""
    now = context.clock()
    # The profile is read before the lock: the lock covers only what the log decides.
    profile = actor_profiles(session, [body.actor]).get(body.actor)
    context.ledger.lock(session)
    if body.client_event_id is not None:
        known = ledger_repo.events_by_client_ids(session, [(caller.name, body.client_event_id)])
        if known:
            return _decision_result(next(iter(known.values())), duplicate=True)
    counts = _distinct_records(session, context, [(body, now)])
    judgement = context.policy.judge(
        profile, _request(body), now, distinct_records_in_window=counts[0]
    )
    event = _new_event("decision", body, now, profile, judgement, context, caller, source_ip)
    appended = context.ledger.append(session, now, [event])[0]
    return DecisionResult(
        decision=judgement.decision,
        reasons=[ReasonRead(code=r.code.value, message=r.message) for r in judgement.reasons],
        seq=appended.seq, event_id=appended.event_id, flags=list(event.flags),
        policy_version=context.policy.version,
    )  # fmt: skip


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
    context.ledger.lock(session)
    known = ledger_repo.events_by_client_ids(
        session, {(caller.name, item.client_event_id) for item in batch.events}
    )
    first_in_batch: dict[str, int] = {}
    fresh: list[int] = []
    for i, item in enumerate(batch.events):
        if item.client_event_id not in first_in_batch and (
            (caller.name, item.client_event_id) not in known
        ):
            first_in_batch[item.client_event_id] = i
            fresh.append(i)
    items = [batch.events[i] for i in fresh]
    profiles = actor_profiles(session, {item.actor for item in items})
    counts = _distinct_records(session, context, [(item, item.occurred_at) for item in items])
    events: list[NewEvent] = []
    for item, count in zip(items, counts, strict=True):
        profile = profiles.get(item.actor)
        judgement = context.policy.judge(
            profile, _request(item), item.occurred_at, reported_at=now,
            distinct_records_in_window=count,
        )  # fmt: skip
        events.append(
            _new_event("report", item, item.occurred_at, profile, judgement, context, caller,
                       source_ip)
        )  # fmt: skip
    appended = context.ledger.append(session, now, events)
    first_results = {
        item.client_event_id: EventResult(
            client_event_id=item.client_event_id, seq=a.seq, event_id=a.event_id,
            decision=e.decision or "", reasons=list(e.reasons), flags=list(e.flags),
            duplicate=False,
        )
        for item, a, e in zip(items, appended, events, strict=True)
    }  # fmt: skip
    results: list[EventResult] = []
    for i, item in enumerate(batch.events):
        stored = known.get((caller.name, item.client_event_id))
        if stored is not None:  # sent in an earlier request
            results.append(_event_result(stored))
        elif first_in_batch[item.client_event_id] == i:
            results.append(first_results[item.client_event_id])
        else:  # repeated inside this batch: the first occurrence's result
            results.append(
                first_results[item.client_event_id].model_copy(update={"duplicate": True})
            )
    return results


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


def _distinct_records(
    session: Session, context: AppContext, requests: Sequence[tuple[DecisionRequest, datetime]]
) -> list[int]:
    """For each request: distinct records its actor touched in the trailing window, itself
    and the other requests of the same batch included (a sliding window per actor)."""
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


def _decision_result(event: Event, duplicate: bool) -> DecisionResult:
    return DecisionResult(
        decision=event.decision or "", reasons=explain(event.reasons, event.details), seq=event.seq,
        event_id=event.event_id, flags=list(event.flags),
        policy_version=event.policy_version or "", duplicate=duplicate,
    )  # fmt: skip


def _event_result(event: Event) -> EventResult:
    return EventResult(
        client_event_id=event.client_event_id or "", seq=event.seq, event_id=event.event_id,
        decision=event.decision or "", reasons=list(event.reasons), flags=list(event.flags),
        duplicate=True,
    )  # fmt: skip
