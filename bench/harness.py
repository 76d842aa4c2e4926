"""What the benchmarks share: a database of their own, the real server, a realistic roster
and request mix, and the table/JSON output. Not a benchmark itself (running it does nothing).

Everything talks to 127.0.0.1 only, and everything started here is stopped or dropped on the
way out, errors included.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
POLICY_DIR = ROOT / "policies"
VENV_BIN = Path(sys.executable).parent
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HOST = "127.0.0.1"

FACILITY_PREFIX = {"greene": "GRN", "phelps": "PHE", "ste_genevieve": "STG"}
CLERK_ACTIONS = {  # action -> the purposes a careful clerk uses for it
    "read_case": ["records_request", "case_update", "transfer_scheduling", "visit_scheduling"],
    "update_case": ["case_update", "intake_processing"],
    "create_case": ["intake_processing"],
    "schedule_transfer": ["transfer_scheduling"],
    "record_visit": ["visit_scheduling"],
}
LOGISTICS_ACTIONS = ["move_supplies", "read_inventory", "update_inventory"]
ENFORCEMENT_ACTIONS = ["arrest", "detain", "patrol", "checkpoint", "removal", "transport_detainee"]
OFFICER_ACTIONS = ["interview", "transport_detainee", "court_coordination", "read_case", "detain"]
TRAINING = ["data_handling", "detainee_privacy", "evidence_chain", "facility_safety"]
JUSTIFICATION = "Phelps clerk out sick; intake backlog of 40 cases at the sally port"


# --- the roster ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorSpec:
    """One mission actor of the benchmark: roles, assignment and training age."""

    username: str
    roles: tuple[str, ...]
    facilities: tuple[str, ...]
    volunteer: bool = True
    active: bool = True
    training_age_days: int | None = 90  # None: no training; > 365: lapsed


def roster(clerks: int = 40, logistics: int = 12, supervisors: int = 4) -> list[ActorSpec]:
    """Per facility: clerks, logistics specialists and supervisors; plus ICE officers and
    the actors that should be denied (lapsed training, not a volunteer, deactivated)."""
    actors: list[ActorSpec] = []
    for facility, prefix in FACILITY_PREFIX.items():
        p = prefix.lower()
        actors += [
            ActorSpec(
                f"clerk.{p}{i:02d}", ("guard_clerk",), (facility,), training_age_days=30 + i * 7
            )
            for i in range(clerks)
        ]
        actors += [
            ActorSpec(f"spc.{p}{i:02d}", ("guard_logistics",), (facility,))
            for i in range(logistics)
        ]
        actors += [
            ActorSpec(f"sup.{p}{i:02d}", ("guard_supervisor",), (facility,))
            for i in range(supervisors)
        ]
    actors += [
        ActorSpec(f"officer.{i:02d}", ("ice_officer",), (), volunteer=False, training_age_days=None)
        for i in range(15)
    ]
    actors.append(ActorSpec("clerk.lapsed", ("guard_clerk",), ("greene",), training_age_days=400))
    actors.append(ActorSpec("clerk.drafted", ("guard_clerk",), ("phelps",), volunteer=False))
    actors.append(ActorSpec("clerk.gone", ("guard_clerk",), ("greene",), active=False))
    return actors


def bootstrap(
    database_url: str, policy_dir: Path, key_file: Path, actors: Sequence[ActorSpec]
) -> tuple[str, str]:
    """Create the actors (with training) and one integration client through the users
    service, as an administrator would; returns (client_id, client_secret)."""
    from app.config import Settings
    from app.context import build_context
    from app.deps import Principal
    from app.users import service
    from app.users.schemas import ClientCreate, TrainingCreate, UserCreate, UserUpdate

    settings = Settings(
        database_url=database_url,
        policy_dir=policy_dir,
        signing_key_file=key_file,
        secret_key=secrets.token_urlsafe(48),
        argon2_time_cost=1,
        argon2_memory_cost=1024,
    )
    context = build_context(settings)
    admin = Principal("user", "bench.admin", frozenset({"admin"}))
    today = context.policy.local_date(context.clock())
    try:
        with context.writer() as session, session.begin():
            for actor in actors:
                service.create_user(
                    session,
                    context,
                    admin,
                    UserCreate(
                        username=actor.username,
                        full_name=actor.username.title(),
                        roles=list(actor.roles),
                        facilities=list(actor.facilities),
                        volunteer=actor.volunteer,
                    ),
                )
                if actor.training_age_days is not None:
                    done = today - timedelta(days=actor.training_age_days)
                    for module in TRAINING:
                        service.add_training(
                            session,
                            context,
                            admin,
                            actor.username,
                            TrainingCreate(module=module, completed_on=done),
                        )
                if not actor.active:
                    service.update_user(
                        session, context, admin, actor.username, UserUpdate(active=False)
                    )
            client, secret = service.create_client(
                session, context, admin, ClientCreate(name="Case management (bench)")
            )
            return client.client_id, secret
    finally:
        context.engine.dispose()


# --- the request mix ----------------------------------------------------------------------


class RequestMix:
    """Believable decision requests: mostly routine work, some denials of every kind."""

    def __init__(self, actors: Sequence[ActorSpec], seed: int = 7, records: int = 20_000) -> None:
        self.rng = random.Random(seed)
        self.records = records
        self.by_role: dict[str, list[ActorSpec]] = {}
        for actor in actors:
            guard_ready = actor.volunteer and (actor.training_age_days or 999) < 365
            if actor.active and (guard_ready or actor.roles == ("ice_officer",)):
                self.by_role.setdefault(actor.roles[0], []).append(actor)
        routine = {a.username for group in self.by_role.values() for a in group}
        self.odd = [a for a in actors if a.username not in routine]
        self.counter = 0

    def _record(self, facility: str, kind: str = "detainee_case") -> dict[str, str]:
        prefix = FACILITY_PREFIX.get(facility, "XXX")
        if kind == "supply_manifest":
            return {
                "type": kind,
                "id": f"SUP-{prefix}-{self.rng.randrange(2000):04d}",
                "facility": facility,
            }
        return {
            "type": kind,
            "id": f"{prefix}-2026-{self.rng.randrange(self.records):05d}",
            "facility": facility,
        }

    def _elsewhere(self, facility: str) -> str:
        return self.rng.choice([f for f in FACILITY_PREFIX if f != facility])

    def next(self) -> tuple[str, dict[str, Any]]:
        """(the kind of request, the body of POST /v1/decisions without client ids)."""
        rng = self.rng
        self.counter += 1
        roll = rng.random()
        workstation = f"WS-{rng.randrange(40):02d}"
        if roll < 0.62:  # routine clerk work at their own facility
            actor = rng.choice(self.by_role["guard_clerk"])
            action = rng.choice(list(CLERK_ACTIONS))
            kind, purpose = "allowed", rng.choice(CLERK_ACTIONS[action])
            facility = actor.facilities[0]
            if rng.random() < 0.04:  # the wrong purpose for the action
                kind, purpose = "denied", "supply_logistics"
            elif rng.random() < 0.03:  # a case at a facility they are not assigned to
                kind, facility = "denied", self._elsewhere(facility)
            body = {
                "actor": actor.username,
                "action": action,
                "record": self._record(facility),
                "purpose": purpose,
            }
        elif roll < 0.80:  # logistics
            actor = rng.choice(self.by_role["guard_logistics"])
            body = {
                "actor": actor.username,
                "action": rng.choice(LOGISTICS_ACTIONS),
                "record": self._record(actor.facilities[0], "supply_manifest"),
                "purpose": "supply_logistics",
            }
            kind = "allowed"
        elif roll < 0.87:  # supervisors, now and then breaking glass for another facility
            actor = rng.choice(self.by_role["guard_supervisor"])
            facility = actor.facilities[0]
            body = {"actor": actor.username, "action": "read_case", "purpose": "records_request"}
            kind = "allowed"
            if rng.random() < 0.15:
                kind = "break_glass"
                body.update(break_glass=True, justification=JUSTIFICATION)
                facility = self._elsewhere(facility)
                if rng.random() < 0.2:
                    kind, body["justification"] = "denied", "urgent"  # too short
            body["record"] = self._record(facility)
        elif roll < 0.95:  # ICE officers: every category, any facility
            actor = rng.choice(self.by_role["ice_officer"])
            action = rng.choice(OFFICER_ACTIONS)
            purpose = "records_request" if action == "read_case" else "case_update"
            body = {
                "actor": actor.username,
                "action": action,
                "purpose": purpose,
                "record": self._record(rng.choice(list(FACILITY_PREFIX))),
            }
            kind = "allowed"
        elif roll < 0.97:  # a Guard role attempting an enforcement or sworn action
            actor = rng.choice(self.by_role["guard_clerk"] + self.by_role["guard_supervisor"])
            body = {
                "actor": actor.username,
                "action": rng.choice(ENFORCEMENT_ACTIONS),
                "record": self._record(actor.facilities[0]),
                "purpose": "case_update",
            }
            kind = "enforcement"
            if actor.roles[0] == "guard_supervisor" and rng.random() < 0.5:
                body.update(break_glass=True, justification=JUSTIFICATION)
        else:  # lapsed, drafted, deactivated, unknown actors and made-up names
            kind = "denied"
            choice = rng.randrange(6)
            actor = rng.choice(self.by_role["guard_clerk"])
            body = {
                "actor": actor.username,
                "action": "read_case",
                "purpose": "records_request",
                "record": self._record(actor.facilities[0]),
            }
            if choice < 3:
                body["actor"] = rng.choice(self.odd).username
            elif choice == 3:
                body["actor"] = f"sgt.nobody{rng.randrange(100)}"
            elif choice == 4:
                body["action"] = "arest"
            else:
                body["record"] = self._record("atlantis")
        body["workstation"] = workstation
        return kind, body


# --- databases ----------------------------------------------------------------------------


@contextmanager
def database(kind: str, workdir: Path, pg_server: str = PG_SERVER) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file in `workdir`, or a PostgreSQL database
    created on `pg_server` and dropped afterwards (even on error)."""
    from app.migrate import upgrade

    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        yield url
        return
    name = f"aa_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
            upgrade(url)
            yield url
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def policy_for_today(workdir: Path, policy_dir: Path, amend: bool) -> tuple[Path, str | None]:
    """The policy folder to serve. The benchmarks run at today's date; when today is past
    the mission window, Guard work would all be `outside_mission_window`, so (unless told
    not to) a copy is served whose window is extended by amendment, as docs describe."""
    from app.policy.loader import load_policy

    policy = load_policy(policy_dir)
    today = policy.local_date(datetime.now(policy.timezone))
    if not amend or policy.window_start <= today <= policy.window_end:
        return policy_dir, None
    target = workdir / "policies"
    target.mkdir()
    for path in policy_dir.glob("*.toml"):
        shutil.copy(path, target / path.name)
    new_end = today + timedelta(days=90)
    for path in target.glob("*.toml"):
        content = path.read_text(encoding="utf-8")
        amended = re.sub(r"(?m)^window_end = .*$", f"window_end = {new_end}", content)
        if amended != content:
            path.write_text(amended, encoding="utf-8")
    load_policy(target)  # still valid
    return target, new_end.isoformat()


# --- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(database_url: str, policy_dir: Path, key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    env.update(
        AUDIT_DATABASE_URL=database_url,
        AUDIT_SECRET_KEY=secrets.token_urlsafe(48),
        AUDIT_SIGNING_KEY_FILE=str(key_file),
        AUDIT_POLICY_DIR=str(policy_dir),
    )
    return env


def app_server_command(port: int) -> list[str]:
    """The real server: `access-audit serve`, one worker."""
    return [
        str(VENV_BIN / "access-audit"),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


@dataclass
class Running:
    """A server we started: its base URL and process id."""

    base: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server has used so far (Linux /proc; else None)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(
    command: list[str], env: dict[str, str], port: int, log: Path, cwd: Path
) -> Iterator[Running]:
    """Run a server process until the block ends; yields it once it answers."""
    base = f"http://{HOST}:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer within 60 s:\n{tail(log)}")
            time.sleep(0.1)
        yield Running(base, proc.pid)
    except BaseException:
        print(f"server log ({log}), last lines:\n{tail(log)}", file=sys.stderr)
        raise
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server we started (its own process group), firmly if it does not go."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def cpu_per(running: Running, before: float | None, count: int) -> float | None:
    """Milliseconds of server CPU per item since `before` (None where not measurable)."""
    after = running.cpu_seconds()
    if before is None or after is None or not count:
        return None
    return (after - before) * 1000 / count


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def client_token(base: str, client_id: str, secret: str) -> str:
    response = httpx.post(
        base + "/v1/auth/token",
        timeout=30,
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


# --- output -------------------------------------------------------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append([_cell(c) for c in cells])

    def render(self) -> str:
        widths = [
            max(len(str(r[i])) for r in [self.headers, *self.rows])
            for i in range(len(self.headers))
        ]
        lines = ["  ".join(str(h).ljust(w) for h, w in zip(self.headers, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        for row in self.rows:
            cells = zip(row, widths, strict=True)
            lines.append(
                "  ".join(
                    str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(cells)
                )
            )
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "platform": sys.platform,
        "date": date.today().isoformat(),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path
