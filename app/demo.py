"""`access-audit demo`: a year of the mission, generated through the real evaluator and ledger.

Three county facilities, users of every role (one with lapsed training, one who did not
volunteer), an integration client, a few thousand accesses with weekday rhythms, a few
break-glass uses, after-hours work, a volume spike, late reports and a handful of
attempted enforcement actions by Guard roles: what oversight should be able to find.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.access.schemas import DecisionRequest, EventBatch, EventReport
from app.access.service import Ask
from app.auth.principal import Principal
from app.config import Settings
from app.context import AppContext, build_context
from app.ledger import repository as ledger_repository
from app.policy.cases import case_files
from app.policy.evaluator import CompiledPolicy
from app.policy.schemas import CaseFileIn, PolicyProposal
from app.reports.schemas import SummaryQuery
from app.users.schemas import ClientCreate, TrainingCreate, UserCreate
from app.vocabulary import Role

DEMO_PASSWORD = "mission-demo-password"  # development demo only; printed on purpose
LOGINS = (
    ("admin", "Demo Administrator", [Role.admin.value]),
    ("dps.okafor", "Ngozi Okafor, Dept. of Public Safety", [Role.oversight.value]),
    ("gov.lindqvist", "Erik Lindqvist, Governor's Office", [Role.oversight.value]),
    ("auditor.park", "Min-jun Park, State Auditor", [Role.auditor.value]),
)


@dataclass(frozen=True)
class DemoActor:
    username: str
    full_name: str
    role: str
    facilities: tuple[str, ...]
    volunteer: bool = True
    trained_on: str | None = "2025-09-22"
    daily: float = 3.0  # mean accesses on a weekday


ACTORS = (
    DemoActor("sgt.miller", "Sgt. Dana Miller", "guard_clerk", ("greene",), daily=4),
    DemoActor("spc.nguyen", "Spc. Linh Nguyen", "guard_clerk", ("greene",)),
    DemoActor("cpl.brooks", "Cpl. Avery Brooks", "guard_clerk", ("phelps",)),
    DemoActor("spc.alvarez", "Spc. Rosa Alvarez", "guard_clerk", ("ste_genevieve",)),
    DemoActor("spc.ortiz", "Spc. Marco Ortiz", "guard_logistics", ("phelps",), daily=2),
    DemoActor("pfc.walker", "Pfc. Jordan Walker", "guard_logistics", ("greene",), daily=2),
    DemoActor("lt.hayes", "1st Lt. Sam Hayes", "guard_supervisor", ("greene",), daily=2),
    DemoActor("sfc.grant", "Sfc. Tobias Grant", "guard_supervisor", ("ste_genevieve",), daily=2),
    DemoActor("spc.dawson", "Spc. Casey Dawson", "guard_clerk", ("phelps",),
              trained_on="2024-11-20", daily=2),
    DemoActor("pvt.kline", "Pvt. Riley Kline", "guard_clerk", ("greene",), volunteer=False,
              daily=0.1),
    DemoActor("officer.reyes", "Officer Ana Reyes (ICE)", "ice_officer", (), volunteer=False,
              trained_on=None, daily=1.5),
    DemoActor("officer.chen", "Officer Wei Chen (ICE)", "ice_officer", (), volunteer=False,
              trained_on=None, daily=1.5),
)  # fmt: skip

PREFIX = {"greene": "GRN", "phelps": "PHE", "ste_genevieve": "STG"}
CLERK_WORK = (
    ("read_case", "case_update", 30), ("read_case", "records_request", 8),
    ("read_case", "intake_processing", 8), ("update_case", "case_update", 20),
    ("update_case", "intake_processing", 6), ("create_case", "intake_processing", 10),
    ("schedule_transfer", "transfer_scheduling", 9), ("record_visit", "visit_scheduling", 9),
)  # fmt: skip
LOGISTICS_WORK = (
    ("move_supplies", "supply_logistics", 40), ("read_inventory", "supply_logistics", 35),
    ("update_inventory", "supply_logistics", 25),
)  # fmt: skip
ICE_WORK = (
    ("interview", "case_update", 30), ("court_coordination", "case_update", 25),
    ("transport_detainee", "transfer_scheduling", 20), ("read_case", "case_update", 25),
)  # fmt: skip
# Attempted mission creep: (day, actor, action, purpose) — each must stand out in reports.
CREEP = (
    ("2025-10-21", "sgt.miller", "transport_detainee", "transfer_scheduling"),
    ("2025-11-14", "spc.ortiz", "checkpoint", "supply_logistics"),
    ("2025-12-09", "cpl.brooks", "detain", "intake_processing"),
    ("2026-01-27", "lt.hayes", "security_operation", "case_update"),
    ("2026-03-05", "spc.alvarez", "interview", "case_update"),
    ("2026-04-16", "pfc.walker", "patrol", "supply_logistics"),
    ("2026-06-02", "sfc.grant", "arrest", "intake_processing"),
    ("2026-08-19", "spc.nguyen", "court_coordination", "records_request"),
)  # fmt: skip
BREAK_GLASS = (
    ("2025-11-20", "lt.hayes", "phelps", "Phelps intake clerk out sick; 30 cases waiting"),
    ("2026-01-08", "lt.hayes", "ste_genevieve", "ice storm closed roads, STG staff absent"),
    ("2026-02-23", "sfc.grant", "greene", "records request deadline from the court today"),
    ("2026-05-11", "sfc.grant", "phelps", "transfer paperwork backlog before the weekend"),
    ("2026-07-30", "lt.hayes", "phelps", "urgent"),  # too short: denied, still flagged
)  # fmt: skip


@dataclass(order=True)
class Submission:
    """Something an integrating app sends at `at`: one decision or a batch of reports."""

    at: datetime
    order: int
    kind: str = field(compare=False)
    payload: Any = field(compare=False)


class DemoClock:
    """The demo's time: the moment each submission of the year is sent."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def already_loaded(context: AppContext) -> bool:
    with context.database.reader() as session:
        return context.users.any_user(session)


def load(settings: Settings, *, seed: int = 2025, scale: float = 1.0) -> dict[str, Any]:
    """Load the demo into an empty database; returns the client's credentials.

    The year is replayed through the real services with a clock set to each submission's
    moment; checkpoints are still stamped with the time they are really signed.
    """
    clock = DemoClock(datetime(2025, 9, 22, 14, 0, tzinfo=UTC))
    context = build_context(settings, clock=clock)
    try:
        context.start()
        demo = _replay(context, clock, random.Random(seed), scale)
    finally:
        context.dispose()
    path = _demo_file(settings)
    # The client's secret is in it: readable by this user only from its first byte.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(json.dumps(demo))
    return demo


def _replay(
    context: AppContext, clock: DemoClock, rng: random.Random, scale: float
) -> dict[str, Any]:
    policy = context.policy
    client_id, secret = _people(context)
    caller = Principal("client", client_id, frozenset({Role.integration.value}))
    admin = Principal("user", "admin", frozenset({Role.admin.value}))
    submissions = Planner(rng, policy, scale).plan()
    total = sum(_size(s) for s in submissions)
    with tqdm(total=total, unit=" accesses", desc="demo year") as bar:
        for sub in submissions:
            clock.at = sub.at
            with context.database.transaction() as session:
                if sub.kind == "decision":
                    context.access.decide(session, [Ask(caller, sub.payload, "10.20.0.15")])
                elif sub.kind == "reports":
                    context.access.report(session, caller, sub.payload, "10.20.0.15")
                else:  # refresher training, recorded by the administrator that day
                    username, completed_on = sub.payload
                    for module in policy.required_training:
                        context.users.add_training(session, admin, username, TrainingCreate(
                            module=module, completed_on=completed_on))  # fmt: skip
            bar.update(_size(sub))
            bar.set_postfix_str(f"{sub.at:%Y-%m-%d}", refresh=False)
    _amend(context, clock, caller)
    return {"client_id": client_id, "client_secret": secret}


# The demo's one amendment: clearly labelled, through the real two-person path.
AMENDMENT_AUTHORITY = (
    "DEMO DATA, not a real order: the Governor's Executive Order 26-14 (fictional) extends "
    "the mission through March 31, 2027"
)
AMENDED_WINDOW_END = "2027-03-31"
PROPOSED_AT = datetime(2026, 10, 12, 15, 0, tzinfo=UTC)
APPROVED_AT = datetime(2026, 10, 13, 16, 30, tzinfo=UTC)


def amended_content(policy: CompiledPolicy) -> dict[str, Any]:
    """The shipped policy with the mission window extended (the demo's amendment)."""
    content: dict[str, Any] = json.loads(json.dumps(dict(policy.content)))
    content["mission"]["window_end"] = AMENDED_WINDOW_END
    return content


def _amend(context: AppContext, clock: DemoClock, caller: Principal) -> None:
    """After the year: the administrator proposes the extension (with the folder's decision
    cases, the end-of-mission case moved to the new end), oversight approves it the next
    day, and the Guard's work goes on under it."""
    admin = Principal("user", "admin", frozenset({Role.admin.value}))
    officer = Principal("user", "dps.okafor", frozenset({Role.oversight.value}))
    cases = []
    for name, content in case_files(context.settings.policy_dir):
        for case in content["case"]:
            if case["name"] == "day after the mission ends":
                case["at"] = "2027-04-01T09:00:00-05:00"
        cases.append(CaseFileIn(name=name, defaults=content.get("defaults", {}),
                                case=content["case"]))  # fmt: skip
    proposal = PolicyProposal(
        content=amended_content(context.policy), authority=AMENDMENT_AUTHORITY, cases=cases
    )
    clock.at = PROPOSED_AT
    with context.database.transaction() as session:
        made = context.policies.propose(session, admin, proposal, "10.20.0.5")
    clock.at = APPROVED_AT
    with context.database.transaction() as session:
        context.policies.approve(session, officer, made.version, None, "10.20.0.7")
    for hours, actor, facility in ((1, "sgt.miller", "greene"), (2, "cpl.brooks", "phelps"),
                                   (20, "spc.nguyen", "greene")):  # fmt: skip
        clock.at = APPROVED_AT + timedelta(hours=hours)
        body = DecisionRequest.model_validate({
            "actor": actor, "action": "update_case", "purpose": "case_update",
            "record": {"type": "detainee_case", "id": f"{PREFIX[facility]}-2025-00{hours:03d}",
                       "facility": facility},
        })  # fmt: skip
        with context.database.transaction() as session:
            context.access.decide(session, [Ask(caller, body, "10.20.0.15")])


def _people(context: AppContext) -> tuple[str, str]:
    admin = Principal("user", "admin", frozenset({Role.admin.value}))
    users = context.users
    with context.database.transaction() as session:
        for i, (username, full_name, roles) in enumerate(LOGINS):
            users.create_user(
                session, None if i == 0 else admin,
                UserCreate(username=username, full_name=full_name, roles=roles,
                           password=DEMO_PASSWORD),
            )  # fmt: skip
        for actor in ACTORS:
            users.create_user(session, admin, UserCreate(
                username=actor.username, full_name=actor.full_name, roles=[actor.role],
                facilities=list(actor.facilities), volunteer=actor.volunteer))  # fmt: skip
            if actor.trained_on:
                completed_on = date.fromisoformat(actor.trained_on)
                for module in context.policy.required_training:
                    users.add_training(
                        session, admin, actor.username,
                        TrainingCreate(module=module, completed_on=completed_on),
                    )  # fmt: skip
        client, secret = users.create_client(
            session, admin, ClientCreate(name="County case-management system")
        )
    return client.client_id, secret


def _size(sub: Submission) -> int:
    if sub.kind == "reports":
        return len(sub.payload.events)
    return 1 if sub.kind == "decision" else 0


class Planner:
    """Draws the year's accesses (seeded, so every demo is the same)."""

    def __init__(self, rng: random.Random, policy: CompiledPolicy, scale: float) -> None:
        self.rng = rng
        self.policy = policy
        self.scale = scale
        self._order = iter(range(10**9))

    def plan(self) -> list[Submission]:
        """Every access of the year, grouped into what the app would send and when."""
        by_day = self._accesses()
        submissions = [
            # spc.dawson's lapsed training is renewed after a fortnight of denials; everyone
            # else takes the annual refresher before theirs lapses.
            self._submission(datetime(2025, 12, 1, 15, tzinfo=UTC), "training",
                             ("spc.dawson", date(2025, 12, 1))),
            *(self._submission(datetime(2026, 9, 8, 15, tzinfo=UTC), "training",
                               (actor.username, date(2026, 9, 8)))
              for actor in ACTORS if actor.trained_on and actor.username != "spc.dawson"),
        ]  # fmt: skip
        for day, accesses in sorted(by_day.items()):
            reports: list[dict[str, Any]] = []
            late: list[dict[str, Any]] = []
            for item in sorted(accesses, key=lambda a: a["occurred_at"]):
                roll = self.rng.random()
                if roll < 0.3 and not item.get("break_glass"):  # asked before, at the time
                    fields = {k: v for k, v in item.items()
                              if k not in ("occurred_at", "client_event_id")}  # fmt: skip
                    body = DecisionRequest.model_validate(fields)
                    submissions.append(self._submission(item["occurred_at"], "decision", body))
                elif roll > 0.985:
                    late.append(item)
                else:
                    reports.append(item)
            # The app sends the day's reports at night; a few stragglers two days later.
            night = datetime.combine(day, time(23, 30), self.policy.timezone).astimezone(UTC)
            for batch, at in ((reports, night), (late, night + timedelta(days=2))):
                if batch:
                    payload = EventBatch(events=[EventReport.model_validate(i) for i in batch])
                    submissions.append(self._submission(at, "reports", payload))
        submissions.sort()
        return submissions

    def _submission(self, at: datetime, kind: str, payload: Any) -> Submission:
        return Submission(at, next(self._order), kind, payload)

    def _accesses(self) -> dict[date, list[dict[str, Any]]]:
        by_day: dict[date, list[dict[str, Any]]] = {}
        day = self.policy.window_start
        while day <= self.policy.window_end:
            by_day[day] = self._ordinary_day(day)
            day += timedelta(days=1)

        def on(when: str) -> tuple[date, list[dict[str, Any]]]:
            day = date.fromisoformat(when)
            return day, by_day.setdefault(day, [])

        for when, actor, action, purpose in CREEP:
            day, accesses = on(when)
            accesses.append(self._access(actor, action, purpose, _home(actor), day, 14))
        for when, actor, facility, why in BREAK_GLASS:
            day, accesses = on(when)
            for _ in range(3):
                item = self._access(actor, "update_case", "case_update", facility, day, 16)
                accesses.append({**item, "break_glass": True, "justification": why})
        day, accesses = on("2026-02-12")  # one afternoon of bulk reading by one clerk
        accesses.extend(
            self._access("sgt.miller", "read_case", "records_request", "greene", day, 15,
                         minute=i // 2, record=f"GRN-2025-{3000 + i:05d}")
            for i in range(64)
        )  # fmt: skip
        for when, actor in (("2025-10-10", "cpl.brooks"), ("2025-10-27", "spc.alvarez")):
            day, accesses = on(when)  # eager before the rollout reached their facility
            accesses.extend(
                self._access(actor, "read_case", "intake_processing", _home(actor), day, 10)
                for _ in range(2)
            )
        for when, actor in (("2026-10-01", "spc.nguyen"), ("2026-10-02", "cpl.brooks"),
                            ("2026-10-05", "spc.nguyen")):  # fmt: skip
            day, accesses = on(when)  # lingering access after the mission ended
            accesses.append(self._access(actor, "read_case", "case_update", _home(actor), day, 9))
        for when, actor, action in (("2025-12-03", "sgt.unknown", "read_case"),
                                    ("2026-04-01", "sgt.miller", "arest")):  # fmt: skip
            day, accesses = on(when)  # a made-up name, and a typo of an action
            accesses.append(self._access(actor, action, "case_update", "greene", day, 11))
        return by_day

    def _ordinary_day(self, day: date) -> list[dict[str, Any]]:
        accesses = []
        weekday = day.weekday() < 5
        for actor in ACTORS:
            mean = actor.daily * self.scale * (1.0 if weekday else 0.15)
            for _ in range(sum(self.rng.random() < mean / 10 for _ in range(10))):
                work: tuple[tuple[str, str, int], ...]
                if actor.role == "ice_officer":
                    facility = self.rng.choice(list(self.policy.facilities))
                    work = ICE_WORK
                else:
                    facility = actor.facilities[0]
                    if day < self.policy.facilities[facility].live_from:
                        continue  # the rollout has not reached them; they are not working yet
                    logistics = actor.role == "guard_logistics" or (
                        actor.role == "guard_supervisor" and self.rng.random() < 0.4
                    )
                    work = LOGISTICS_WORK if logistics else CLERK_WORK
                action, purpose, _ = self.rng.choices(work, weights=[w for *_, w in work])[0]
                if self.rng.random() < 0.01:  # a wrong purpose picked in a drop-down
                    purpose = "supply_logistics" if action == "read_case" else "records_request"
                hour = 21 if self.rng.random() < 0.025 else None
                accesses.append(self._access(actor.username, action, purpose, facility, day, hour))
        return accesses

    def _access(
        self, actor: str, action: str, purpose: str, facility: str, day: date,
        hour: int | None, minute: int | None = None, record: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        rng = self.rng
        if hour is None:
            hour = min(19, max(6, round(rng.gauss(11.5, 2.6))))
        minute = rng.randrange(60) if minute is None else minute
        local = datetime.combine(day, time(hour, minute, rng.randrange(60)), self.policy.timezone)
        logistics = action in ("move_supplies", "read_inventory", "update_inventory")
        prefix = PREFIX[facility]
        record_id = record or (
            f"SUP-{prefix}-{rng.randrange(1, 400):04d}" if logistics
            else f"{prefix}-2025-{rng.randrange(1, 2500):05d}"
        )  # fmt: skip
        return {
            "actor": actor, "action": action, "purpose": purpose,
            "record": {"type": "supply_manifest" if logistics else "detainee_case",
                       "id": record_id, "facility": facility},
            "workstation": f"{prefix}-{'DOCK' if logistics else 'DESK'}-{rng.randrange(1, 6):02d}",
            "occurred_at": local.astimezone(UTC),
            "client_event_id": f"cms-{rng.getrandbits(64):016x}",
        }  # fmt: skip


def _home(username: str) -> str:
    return next(a for a in ACTORS if a.username == username).facilities[0]


def _demo_file(settings: Settings) -> Path:
    return settings.state_path / ".access_audit_demo_client.json"


def summary(context: AppContext) -> dict[str, Any]:
    """Counts and logins to print after loading (or on every `make run`)."""
    with context.database.reader() as session:
        head = ledger_repository.head(session)
        access = context.reports.summary_report(session, SummaryQuery(group_by=[]))
        demo_admin = context.users.get_user_or_none(session, "admin")
    path = _demo_file(context.settings)
    client = json.loads(path.read_text()) if path.exists() else None
    return {
        "events": head[0] if head else 0,  # seq has no gaps: the head's seq is the count
        "denied": sum(group.denied for group in access.groups),
        "demo": demo_admin is not None,
        "client": client,
    }
