"""What the benchmarks share: a database of their own, the real server, a realistic roster
and request mix, and the table/JSON output. Not a benchmark itself (running it does nothing).

The benchmarks meet the service only where its contract is fixed: its command line
(`access-audit migrate | serve | users add`, configured by the AUDIT_* environment) and its
HTTP API. The roster and the integration client are made over HTTP by an administrator the
command line bootstrapped (`bootstrapped_service`). From the `app` package only the
migrations (`app.migrate.upgrade`) and the policy loader are imported, here, never its
internals, which may change under the benchmarks.

The code measured is the code of this checkout: it is put first on the import path, here
and in every server started (PYTHONPATH), whatever an editable install of the virtualenv
points at.

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

if str(ROOT) not in sys.path[:1]:  # this checkout's `app`, not the one a venv points at
    sys.path.insert(0, str(ROOT))

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


def create_admin(env: dict[str, str], cwd: Path) -> tuple[str, str]:
    """The first administrator, made with the command line as an operator would
    (`access-audit users add NAME --role admin --password -`); returns (username, password)."""
    username, password = "bench.admin", secrets.token_urlsafe(24)
    done = subprocess.run(
        [*cli_command(), "users", "add", username, "--role", "admin", "--password", "-"],
        input=password + "\n",
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"access-audit users add failed ({done.returncode}):\n{done.stderr}")
    return username, password


@dataclass
class Bootstrapped:
    """What `bootstrap` made: the integration client, and how the HTTP calls went."""

    client_id: str
    client_secret: str
    calls: int = 0
    # A 404 for the user just created (201): the service answered before its commit was
    # visible; the call is retried, and the count reported (it is the service's to fix).
    stale_reads: int = 0


def bootstrap(base: str, admin: tuple[str, str], actors: Sequence[ActorSpec]) -> Bootstrapped:
    """Create the actors (with training; the inactive ones deactivated) and one integration
    client over the admin HTTP API of the running server at `base`, logged in as `admin`
    (see `create_admin`), on one keep-alive connection.

    Training dates count back from this machine's date: a day off the mission's time zone
    is nothing beside training ages of 30 to 400 days."""
    today = date.today()
    made = Bootstrapped("", "")
    with httpx.Client(base_url=base, timeout=60) as http:

        def call(method: str, path: str, body: dict[str, Any], just_made: bool = False) -> Any:
            for _ in range(100):
                made.calls += 1
                response = http.request(method, path, json=body)
                if not (just_made and response.status_code == 404):
                    break
                made.stale_reads += 1
                time.sleep(0.01)
            if response.status_code >= 300:
                raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text}")
            return response.json()

        username, password = admin
        token = _token(http, {"grant_type": "password", "username": username, "password": password})
        http.headers["authorization"] = f"Bearer {token}"
        for actor in actors:
            user = {
                "username": actor.username,
                "full_name": actor.username.title(),
                "roles": list(actor.roles),
                "facilities": list(actor.facilities),
                "volunteer": actor.volunteer,
            }
            call("POST", "/v1/users", user)
            if actor.training_age_days is not None:
                done = (today - timedelta(days=actor.training_age_days)).isoformat()
                for module in TRAINING:
                    training = {"module": module, "completed_on": done}
                    call("POST", f"/v1/users/{actor.username}/training", training, True)
            if not actor.active:
                call("PATCH", f"/v1/users/{actor.username}", {"active": False}, True)
        client = call("POST", "/v1/clients", {"name": "Case management (bench)"})
    made.client_id, made.client_secret = str(client["client_id"]), str(client["client_secret"])
    return made


def _token(http: httpx.Client, form: dict[str, str]) -> str:
    response = http.post("/v1/auth/token", data=form)
    if response.status_code != 200:
        raise RuntimeError(f"POST /v1/auth/token -> {response.status_code}: {response.text}")
    return str(response.json()["access_token"])


@dataclass
class Service:
    """The real server, bootstrapped: where it answers and the integration client's token."""

    running: Running
    env: dict[str, str]
    token: str
    made: Bootstrapped
    seconds: float  # to bootstrap: the command line, the server's start and the HTTP calls
    http_seconds: float  # of which the roster and the client over HTTP

    @property
    def client_id(self) -> str:
        return self.made.client_id

    @property
    def client_secret(self) -> str:
        return self.made.client_secret

    def bootstrap_facts(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "http_seconds": self.http_seconds,
            "http_calls": self.made.calls,
            "stale_reads_retried": self.made.stale_reads,
        }

    def bootstrap_line(self) -> str:
        line = (
            f"bootstrap: {self.seconds:.1f} s ({self.made.calls} HTTP calls "
            f"in {self.http_seconds:.1f} s)"
        )
        if self.made.stale_reads:
            line += (
                f"; WARNING {self.made.stale_reads} times a user just created (201) was "
                "not found (404) by the next call: retried"
            )
        return line


@contextmanager
def bootstrapped_service(
    database_url: str,
    policy_dir: Path,
    workdir: Path,
    actors: Sequence[ActorSpec],
    port: int | None = None,
    log_name: str = "server.log",
    workers: int = 1,
) -> Iterator[Service]:
    """`access-audit serve` (`workers`) on a migrated database, with an admin made by the
    command line, the actors and one integration client made over HTTP, and that client's
    token. The server is stopped when the block ends."""
    key_file = workdir / "signing.pem"
    env = server_env(database_url, policy_dir, key_file)
    started = time.perf_counter()
    admin = create_admin(env, workdir)
    port = port or free_port()
    command = app_server_command(port, workers)
    with server(command, env, port, workdir / log_name, workdir) as running:
        over_http = time.perf_counter()
        made = bootstrap(running.base, admin, actors)
        token = client_token(running.base, made.client_id, made.client_secret)
        done = time.perf_counter()
        yield Service(running, env, token, made, done - started, done - over_http)


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


def checkout_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with this checkout first on PYTHONPATH: a command started with it (the
    `access-audit` of the virtualenv, uvicorn) runs this checkout's `app`, even where the
    virtualenv's editable install points at another one."""
    path = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return {**env, "PYTHONPATH": path}


def server_env(database_url: str, policy_dir: Path, key_file: Path) -> dict[str, str]:
    env = checkout_env({k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")})
    env.update(
        AUDIT_DATABASE_URL=database_url,
        AUDIT_SECRET_KEY=secrets.token_urlsafe(48),
        AUDIT_SIGNING_KEY_FILE=str(key_file),
        AUDIT_POLICY_DIR=str(policy_dir),
    )
    return env


def cli_command() -> list[str]:
    """The `access-audit` command of this virtualenv."""
    return [str(VENV_BIN / "access-audit")]


def app_server_command(port: int, workers: int = 1) -> list[str]:
    """The real server: `access-audit serve`, one worker unless told."""
    return [
        *cli_command(),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


@dataclass
class Running:
    """A server we started: its base URL and process id."""

    base: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server has used so far (Linux /proc; else None)."""
        return process_cpu_seconds(self.pid)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` (all its threads) so far; None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def driver_dsn(database_url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL (for psycopg itself)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def backend_cpu(database_url: str) -> dict[int, float] | None:
    """CPU seconds so far of each PostgreSQL backend connected to this database (its own
    server on this machine), by pid; None on SQLite or where it cannot be read."""
    if not database_url.startswith("postgresql"):
        return None
    import psycopg

    with psycopg.connect(driver_dsn(database_url), autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    cpu = {pid: process_cpu_seconds(pid) for pid in pids}
    return None if any(v is None for v in cpu.values()) else {k: v or 0.0 for k, v in cpu.items()}


def backend_cpu_spent(
    before: dict[int, float] | None, after: dict[int, float] | None
) -> float | None:
    """CPU seconds the database's backends spent between two `backend_cpu` snapshots (a
    backend born in between counts from zero; one gone in between is missed)."""
    if before is None or after is None:
        return None
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


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
