"""Which policy version judges which instant: the timeline of the log's `policy` events.

Every version that becomes active is appended as a `kind: "policy"`, `action: "activate"`
event holding its full content and `effective_from` (`app.policy.service`). The book reads
them back, compiles each version once, and answers `at(instant)`: the version with the
latest `effective_from` at or before the instant (ties: the later event). An instant
before the first activation is judged by the first version (it is the policy the service
was started with, recorded at its first start-up).

`refresh` costs one indexed query (the highest seq of a `policy` event) and reloads only
when it changed, so every worker on every server sees an approval at its next request:
the access path refreshes under the ledger lock, so no decision is judged by an older
version than the log holds at that instant.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.ledger.models import Event
from app.policy.evaluator import CompiledPolicy
from app.policy.loader import compile_content
from app.vocabulary import Kind

_events = Event.__table__.c
# Asked before every decision group: built once, on the table's columns (the ORM's
# statement building and execution path were 3% of a decision's server CPU).
_LATEST_POLICY_SEQ: Final = select(func.max(_events.seq)).where(_events.kind == Kind.policy)

ACTIVATE: Final = "activate"


@dataclass(frozen=True, slots=True)
class Activation:
    """One `policy` event that made a version active from `effective_from`."""

    seq: int
    version: str
    effective_from: datetime
    recorded_at: datetime
    authority: str
    proposed_by: str | None
    approved_by: str | None
    policy: CompiledPolicy


def in_force(activations: Sequence[tuple[int, datetime]], instant: datetime) -> int | None:
    """The seq of the activation in force at `instant`, of (seq, effective_from) in seq
    order: the latest `effective_from` at or before it (ties: the later seq); before the
    first, the first; None for none."""
    best: tuple[datetime, int] | None = None
    for seq, effective_from in activations:
        if effective_from <= instant and (best is None or (effective_from, seq) >= best):
            best = (effective_from, seq)
    if best is not None:
        return best[1]
    return activations[0][0] if activations else None


class PolicyBook:
    """The versions the log holds, in the order they took effect; shared by all requests
    of a process (a refresh replaces the timeline in one assignment)."""

    def __init__(self, initial: CompiledPolicy) -> None:
        self.initial = initial  # the policy folder this process started with
        self._compiled: dict[str, CompiledPolicy] = {initial.version: initial}
        self._timeline: tuple[Activation, ...] = ()
        self._seen: int | None = None
        self._lock = threading.Lock()

    @property
    def timeline(self) -> tuple[Activation, ...]:
        """The activations read at the last refresh, in seq order."""
        return self._timeline

    def refresh(self, session: Session) -> None:
        """Read the activations again if a `policy` event was appended since the last
        refresh (one indexed query otherwise)."""
        latest = session.execute(_LATEST_POLICY_SEQ).scalar()
        if latest == self._seen:
            return
        with self._lock:
            rows = session.execute(
                select(Event.seq, Event.recorded_at, Event.details)
                .where(Event.kind == Kind.policy, Event.action == ACTIVATE)
                .order_by(Event.seq)
            ).all()
            self._timeline = tuple(self._activation(*row) for row in rows)
            self._seen = latest

    def _activation(
        self, seq: int, recorded_at: datetime, details: Mapping[str, Any]
    ) -> Activation:
        return Activation(
            seq=seq,
            version=details["version"],
            effective_from=datetime.fromisoformat(details["effective_from"]),
            recorded_at=recorded_at,
            authority=details.get("authority", ""),
            proposed_by=details.get("proposed_by"),
            approved_by=details.get("approved_by"),
            policy=self.compiled(details["version"], details["content"]),
        )

    @property
    def volume_limit(self) -> int:
        """How far the volume rule must count to judge every version's threshold."""
        thresholds = [a.policy.volume_spike_records for a in self._timeline]
        return max([self.initial.volume_spike_records, *thresholds]) + 1

    def compiled(self, version: str, content: dict[str, Any]) -> CompiledPolicy:
        """The compiled policy of `content` (whose digest is `version`), compiled once."""
        policy = self._compiled.get(version)
        if policy is None:
            policy = compile_content(content)
            if policy.version != version:
                raise ValueError(f"policy content does not digest to {version}")
            self._compiled[version] = policy
        return policy

    def version(self, version: str) -> CompiledPolicy | None:
        """A version this process has compiled (every activation, and the folder's)."""
        return self._compiled.get(version)

    def activation_at(self, instant: datetime) -> Activation | None:
        """The activation in force at `instant` (None when the log holds none)."""
        timeline = self._timeline
        seq = in_force([(a.seq, a.effective_from) for a in timeline], instant)
        return next((a for a in timeline if a.seq == seq), None)

    def at(self, instant: datetime) -> CompiledPolicy:
        """The policy that judges `instant` (as of the last refresh)."""
        activation = self.activation_at(instant)
        return self.initial if activation is None else activation.policy

    def current(self, session: Session, now: datetime) -> CompiledPolicy:
        """Refresh, then the policy in force at `now`."""
        self.refresh(session)
        return self.at(now)
