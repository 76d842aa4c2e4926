"""The policy history: proposals, approval by a second person, rejection, and start-up.

The log is the only store. Each step is a `kind: "policy"` event on the record
`("policy", version)`:

- `propose` (an admin): the content, the authority, the requested `effective_from`, and
  the decision cases it passed;
- `activate` (an oversight officer, never the proposer; or `system` for the policy folder
  at the first start-up): the content again, the authority, who proposed and who
  approved, and the `effective_from` it takes effect at (never before the approval: a
  version never judges what happened before it was approved);
- `reject` (an oversight officer): the note.

A version's status is read from its latest step: `proposed`, `rejected`, or, once
activated, `active` / `scheduled` / `superseded` by the timeline of activations
(`app.policy.book`). Every step is taken under the ledger lock, so two approvals of one
proposal cannot both land.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from app.auth.principal import Principal
from app.clock import Clock
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.ledger.canonical import format_timestamp
from app.ledger.models import Event
from app.ledger.service import Ledger, LockedAppend, NewEvent
from app.pagination import Cursors, int_key
from app.policy.book import ACTIVATE, PolicyBook, in_force
from app.policy.cases import parse_cases, run_cases
from app.policy.diff import diff_content
from app.policy.evaluator import CompiledPolicy
from app.policy.loader import check_content
from app.policy.reasons import REASON_ORDER
from app.policy.replay import Outcome, Rejudge, access_rows
from app.policy.schemas import (
    Approval,
    Impact,
    ImpactEvent,
    ImpactQuery,
    PolicyDetail,
    PolicyDiff,
    PolicyProposal,
    PolicyRead,
    ReasonImpact,
    Rejection,
    RuleChange,
    Status,
)
from app.vocabulary import DENY, Kind

log = logging.getLogger("access_audit")

PROPOSE: Final = "propose"
REJECT: Final = "reject"
SYSTEM: Final = "system"


class PolicyMismatch(Exception):
    """The policy folder holds a version the log never saw: start-up stops."""


@dataclass(slots=True)
class _Version:
    """A version's steps folded in seq order."""

    version: str
    content: dict[str, Any]
    authority: str
    step: str  # the latest: propose, activate or reject
    seq: int  # the latest step's event
    proposed_by: str | None = None
    proposed_at: datetime | None = None
    requested_from: str | None = None
    approved_by: str | None = None
    decided_at: datetime | None = None
    effective_from: datetime | None = None
    note: str | None = None
    activations: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _History:
    versions: dict[str, _Version]
    activations: list[tuple[int, datetime]]  # (seq, effective_from) of every activation

    def status(self, v: _Version, now: datetime) -> Status:
        if v.step != ACTIVATE:
            return "proposed" if v.step == PROPOSE else "rejected"
        current = in_force(self.activations, now)
        if current == v.seq:
            return "active"
        if v.effective_from is not None and v.effective_from > now:
            return "scheduled"
        return "superseded"

    @property
    def active_versions(self) -> set[str]:
        return {v.version for v in self.versions.values() if v.step == ACTIVATE}


class Policies:
    """GET/POST /v1/policies and the start-up check of the policy folder."""

    def __init__(
        self,
        book: PolicyBook,
        ledger: Ledger,
        clock: Clock,
        cursors: Cursors,
        *,
        folder: Path,
        initial_authority: str,
    ) -> None:
        self.book = book
        self.ledger = ledger
        self.clock = clock
        self.cursors = cursors
        self.folder = folder
        self.initial_authority = initial_authority

    # -- reading ---------------------------------------------------------------------------

    def _history(self, session: Session) -> _History:
        rows = session.execute(
            select(Event.seq, Event.action, Event.actor, Event.occurred_at, Event.details)
            .where(Event.kind == Kind.policy.value)
            .order_by(Event.seq)
        ).all()
        versions: dict[str, _Version] = {}
        activations: list[tuple[int, datetime]] = []
        for seq, action, actor, occurred_at, details in rows:
            version = details.get("version")
            if not isinstance(version, str):
                continue
            v = versions.get(version)
            if action == PROPOSE:
                v = versions[version] = _Version(
                    version, details["content"], details.get("authority", ""), PROPOSE, seq,
                    proposed_by=actor, proposed_at=occurred_at,
                    requested_from=details.get("effective_from"),
                    activations=v.activations if v else [],
                )  # fmt: skip
            elif action == ACTIVATE:
                effective = datetime.fromisoformat(details["effective_from"])
                activations.append((seq, effective))
                if v is None:
                    v = versions[version] = _Version(
                        version, details["content"], details.get("authority", ""), ACTIVATE, seq
                    )
                v.step, v.seq = ACTIVATE, seq
                v.proposed_by = details.get("proposed_by")
                v.approved_by = details.get("approved_by")
                v.authority = details.get("authority", v.authority)
                v.decided_at, v.effective_from = occurred_at, effective
                v.note = details.get("note")
                v.activations.append(seq)
            elif action == REJECT and v is not None:
                v.step, v.seq = REJECT, seq
                v.approved_by, v.decided_at = None, occurred_at
                v.note = details.get("note")
        return _History(versions, activations)

    def _read(self, history: _History, v: _Version) -> PolicyRead:
        return PolicyRead(
            version=v.version, status=history.status(v, self.clock()),
            authority=v.authority, proposed_by=v.proposed_by, approved_by=v.approved_by,
            effective_from=v.effective_from, seq=v.seq, proposed_at=v.proposed_at,
            decided_at=v.decided_at, note=v.note,
            name=str(v.content.get("mission", {}).get("name", "")),
        )  # fmt: skip

    def list(self, session: Session) -> list[PolicyRead]:
        """Every version the log holds, the latest step first."""
        history = self._history(session)
        ordered = sorted(history.versions.values(), key=lambda v: v.seq, reverse=True)
        return [self._read(history, v) for v in ordered]

    def _version(self, history: _History, version: str) -> _Version:
        v = history.versions.get(version)
        if v is None:
            raise NotFound(f"no policy version {version} in the log")
        return v

    def get(self, session: Session, version: str) -> PolicyDetail:
        history = self._history(session)
        v = self._version(history, version)
        return PolicyDetail(**self._read(history, v).model_dump(), content=v.content)

    def diff(self, session: Session, version: str, against: str) -> PolicyDiff:
        """What `version` changes from `against`, rule by rule."""
        history = self._history(session)
        new, old = self._version(history, version), history.versions.get(against)
        if old is None:
            raise Invalid(["query", "against"], f"no policy version {against} in the log")
        changes = [RuleChange(**c) for c in diff_content(old.content, new.content)]
        return PolicyDiff(version=version, against=against, changes=changes)

    def content_of(self, session: Session, version: str) -> CompiledPolicy:
        """The compiled policy of any version the log holds (proposed ones included)."""
        compiled = self.book.version(version)
        if compiled is not None:
            return compiled
        v = self._version(self._history(session), version)
        return self.book.compiled(version, v.content)

    def impact(self, session: Session, version: str, query: ImpactQuery) -> Impact:
        """Judge the period's decisions and reports again under `version`, from their
        recorded facts: the counts over the whole period, the changed events paged."""
        policy = self.content_of(session, version)
        params = {"version": version, **query.model_dump(mode="json")}
        after = int_key(self.cursors.decode("impact", params, query.cursor))
        if query.since and query.until and query.since >= query.until:
            raise Invalid(["query", "since"], "since is not before until")
        counts = {"evaluated": 0, "unchanged": 0, "changed": 0, "allow_to_deny": 0,
                  "deny_to_allow": 0, "without_facts": 0}  # fmt: skip
        added: dict[str, int] = {}
        removed: dict[str, int] = {}
        page: list[Outcome] = []
        judge = Rejudge()
        for row in access_rows(session, query.since, query.until):
            compared = judge.compare(policy, row)
            if compared is None:
                counts["without_facts"] += 1
                continue
            counts["evaluated"] += 1
            if compared[0] == compared[1]:
                counts["unchanged"] += 1
                continue
            counts["changed"] += 1
            outcome = Outcome(row.seq, row.kind, row.occurred_at, row.actor, *compared)
            (was, was_reasons, _), (now, reasons, _) = compared
            if was != now:
                counts["allow_to_deny" if now == DENY else "deny_to_allow"] += 1
            for code in set(reasons) - set(was_reasons):
                added[code] = added.get(code, 0) + 1
            for code in set(was_reasons) - set(reasons):
                removed[code] = removed.get(code, 0) + 1
            if (after is None or outcome.seq > after) and len(page) <= query.limit:
                page.append(outcome)
        items, next_cursor = self.cursors.page(page, query.limit, "impact", params,
                                               lambda o: o.seq)  # fmt: skip
        order = {code.value: i for code, i in REASON_ORDER.items()}
        codes = sorted(set(added) | set(removed), key=lambda c: (order.get(c, len(order)), c))
        return Impact(
            version=version, since=query.since, until=query.until, **counts,
            by_reason=[ReasonImpact(code=c, added=added.get(c, 0), removed=removed.get(c, 0))
                       for c in codes],
            events=[ImpactEvent(seq=o.seq, kind=o.kind, occurred_at=o.occurred_at,
                                actor=o.actor, was=o.was[0], would_be=o.now[0],
                                reasons=list(o.now[1]), was_reasons=list(o.was[1]),
                                flags=list(o.now[2]), was_flags=list(o.was[2]))
                    for o in items],
            next_cursor=next_cursor,
        )  # fmt: skip

    def replay(
        self,
        session: Session,
        since: datetime | None = None,
        until: datetime | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[str, Row[Any], Outcome | None]]:
        """Judge every decision and report of [since, until) again under the version it
        records; yields ("unknown_version" | "without_facts" | "differs", row, outcome)
        for each event that does not reproduce (and counts all through `progress`)."""
        self.book.refresh(session)
        history = self._history(session)
        judge = Rejudge()
        done = 0
        for row in access_rows(session, since, until):
            done += 1
            if progress is not None and done % 1000 == 0:
                progress(done)
            policy = self.book.version(row.policy_version or "")
            if policy is None and row.policy_version in history.versions:
                content = history.versions[row.policy_version].content
                policy = self.book.compiled(row.policy_version, content)
            if policy is None:
                yield "unknown_version", row, None
                continue
            compared = judge.compare(policy, row)
            if compared is None:
                yield "without_facts", row, None
            elif compared[0] != compared[1]:
                yield "differs", row, Outcome(row.seq, row.kind, row.occurred_at, row.actor,
                                              *compared)  # fmt: skip
        if progress is not None:
            progress(done)

    # -- steps -----------------------------------------------------------------------------

    def propose(
        self, session: Session, by: Principal, body: PolicyProposal, source_ip: str | None
    ) -> PolicyRead:
        """Validate the content and run its cases (422 naming what failed), then append
        the proposal."""
        now = self.clock()
        compiled, problems = check_content(body.content)
        if compiled is None:
            raise Invalid.many([(["body", "content", *loc], msg) for loc, msg in problems])
        window = compiled.volume_spike_window_minutes * 60
        if window != self.ledger.volume.width:
            raise Invalid(
                ["body", "content", "flags", "volume_spike_window_minutes"],
                "the volume window is fixed for a deployment (its running counts are kept for "
                f"it): keep {self.ledger.volume.width // 60} minutes",
            )
        if body.effective_from is not None and body.effective_from < now:
            raise Invalid(
                ["body", "effective_from"],
                "effective_from is in the past: a version never judges what happened "
                "before its approval",
            )
        files = [(f.name, {"defaults": f.defaults, "case": f.case}) for f in body.cases]
        cases, case_problems = parse_cases(files)
        if case_problems:
            raise Invalid.many([(["body", "cases", name], msg) for name, msg in case_problems])
        failed = [r for r in run_cases(compiled, cases) if not r.passed]
        if failed:
            raise Invalid.many(
                [
                    (["body", "cases", r.file, r.name], f"expected {r.expected}, got {r.got}")
                    for r in failed
                ]
            )
        locked = self.ledger.lock(session)
        history = self._ensure_initial(session, locked, now)
        v = history.versions.get(compiled.version)
        if v is not None and history.status(v, now) in ("proposed", "active", "scheduled"):
            raise Conflict(f"version {compiled.version} is already {history.status(v, now)}")
        details: dict[str, Any] = {
            "version": compiled.version,
            "content": dict(compiled.content),
            "authority": body.authority,
            "effective_from": (
                None if body.effective_from is None else format_timestamp(body.effective_from)
            ),
            "cases": [{"name": name, **content} for name, content in files],
        }
        self._append(locked, now, by, PROPOSE, compiled.version, details, source_ip)
        return self._read(self._history(session), self._version(self._history(session),
                                                                 compiled.version))  # fmt: skip

    def approve(
        self,
        session: Session,
        by: Principal,
        version: str,
        body: Approval | None,
        source_ip: str | None,
    ) -> PolicyRead:
        """Activate a proposal from its `effective_from` (never before now); 403 for the
        proposer."""
        now = self.clock()
        locked = self.ledger.lock(session)
        history = self._ensure_initial(session, locked, now)
        v = self._proposal(history, version, now)
        if v.proposed_by == by.name:
            raise Forbidden("a proposal is approved by someone other than its proposer")
        requested = datetime.fromisoformat(v.requested_from) if v.requested_from else now
        effective = max(requested, now)
        details = {
            "version": version,
            "content": v.content,
            "authority": v.authority,
            "proposed_by": v.proposed_by,
            "approved_by": by.name,
            "effective_from": format_timestamp(effective),
            "proposal_seq": v.seq,
            "note": body.note if body else None,
        }
        self._append(locked, now, by, ACTIVATE, version, details, source_ip)
        history = self._history(session)
        return self._read(history, history.versions[version])

    def reject(
        self, session: Session, by: Principal, version: str, body: Rejection, source_ip: str | None
    ) -> PolicyRead:
        now = self.clock()
        locked = self.ledger.lock(session)
        history = self._ensure_initial(session, locked, now)
        v = self._proposal(history, version, now)
        details = {"version": version, "note": body.note, "proposal_seq": v.seq}
        self._append(locked, now, by, REJECT, version, details, source_ip)
        history = self._history(session)
        return self._read(history, history.versions[version])

    def _proposal(self, history: _History, version: str, now: datetime) -> _Version:
        v = self._version(history, version)
        if v.step != PROPOSE:
            raise Conflict(f"version {version} is {history.status(v, now)}, not proposed")
        return v

    def _append(
        self,
        locked: LockedAppend,
        now: datetime,
        by: Principal | None,
        action: str,
        version: str,
        details: dict[str, Any],
        source_ip: str | None,
    ) -> None:
        actor = by.name if by else SYSTEM
        locked.append(
            now,
            [
                NewEvent(
                    kind=Kind.policy.value, occurred_at=now, actor=actor,
                    actor_roles=sorted(by.roles) if by else [], action=action,
                    record_type="policy", record_id=version, source=actor,
                    source_ip=source_ip, policy_version=version, details=details,
                )
            ],
        )  # fmt: skip

    def _ensure_initial(self, session: Session, locked: LockedAppend, now: datetime) -> _History:
        """The history, with the policy this process started with recorded as the first
        activation if the log holds none (it has judged everything so far)."""
        history = self._history(session)
        if history.activations:
            return history
        initial = self.book.initial
        details = {
            "version": initial.version,
            "content": dict(initial.content),
            "authority": self.initial_authority,
            "proposed_by": None,
            "approved_by": None,
            "effective_from": format_timestamp(now),
            "source": "the policy folder at the service's first start-up",
        }
        self._append(locked, now, None, ACTIVATE, initial.version, details, None)
        return self._history(session)

    # -- start-up --------------------------------------------------------------------------

    def start(self, session: Session) -> None:
        """Record the folder's policy as the first version, or check it against the log:
        a folder the log never saw stops start-up (PolicyMismatch)."""
        now = self.clock()
        locked = self.ledger.lock(session)
        history = self._ensure_initial(session, locked, now)
        folder = self.book.initial.version
        current = in_force(history.activations, now)
        active = next((v for v in history.versions.values() if current in v.activations), None)
        if active is not None and active.version == folder:
            return
        known = history.versions.get(folder)
        if known is None:
            raise PolicyMismatch(
                f"the policy folder {self.folder} holds version {folder}, which the log has "
                f"never seen; the active version is "
                f"{active.version if active else 'unknown'}"
                f"{f' (approved by {active.approved_by})' if active and active.approved_by else ''}"
                ". Propose the folder (`access-audit policy propose "
                f"{self.folder} --authority ...`) and have oversight approve it, or restore "
                "the active version's content (GET /v1/policies/{version})."
            )
        log.warning(
            "the policy folder %s holds version %s (%s); the log's active version %s judges",
            self.folder, folder, history.status(known, now),
            active.version if active else "unknown",
        )  # fmt: skip
