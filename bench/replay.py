"""Replay, impact, the cost of recording facts, and how fast an approval reaches every worker.

Issue 13's speed targets, on each database (a SQLite file; a PostgreSQL database of its own):

1. **replay and impact against a bare scan.** A log of N events (bench/mission_log.py's
   bulk load with `facts=True`: the shipped policy's activation first, then decisions and
   reports judged by the real compiled policy, each recording `details.facts` and its
   reasons as the service does) is judged again, in rounds that alternate three passes:
   - `replay`: `Policies.replay` (the work of `access-audit replay`, in process: every
     decision and report judged under the version it records, from its recorded facts;
     it must reproduce all of them);
   - `impact`: `Policies.impact` (the logic of `GET /v1/policies/{version}/impact`) over
     the whole log under a candidate version that ends the mission window 60 days early
     (so a share of the decisions flips to deny and the counts, by reason, have work);
     the candidate is compiled into the book as a proposal's would be by `content_of`;
   - the ceiling: the raw driver (sqlite3; psycopg with a server-side cursor) selecting
     the same columns of the same rows (decisions and reports, in seq order, 2,000 a
     fetch) and decoding the same JSON (reasons, flags, details: `json.loads` on SQLite,
     psycopg's own jsonb decoding on PostgreSQL), nothing else.
   Ratios are each round's service rate over that round's scan rate; the figure is the
   median. Memory: a child process replays (and, separately, computes the impact of) the
   first tenth of the log and the whole of it, and reports its peak RSS above its RSS
   before the pass (VmHWM, reset after the imports and the context are built).
   Target: both ratios >= 0.5; the peak for N roughly that for N/10.

2. **the cost of recording facts on ingest.** Two real servers (`access-audit serve`, one
   worker each) on the same database: one as shipped, one started by
   bench/serve_without_facts.py, which is `access-audit serve` with the facts builder
   (`app.access.service.actor_facts`) replaced by one that returns nothing and the event
   builder (`_event`) recording no `details.facts` (everything else as shipped). Each
   round posts reported events in batches of 1,000, each over its server's one keep-alive
   connection (bench/ingest.py's `ingest`), the batches alternating between the two
   servers in ABBA pairs (facts-none, none-facts, ...), so that the log's
   growth and the machine's drift weigh on both alike. Cost: the median batch rate without
   facts over the median batch rate with them, minus 1 (each median over all of a side's
   batches; the rounds' own ratios are reported beside it, and swing with any stall of the
   machine that lands in one of their few batches). Target <= 10%.

3. **from approval to every worker** (PostgreSQL only): `access-audit serve --workers 4`,
   an admin proposes an amended policy (`POST /v1/policies`) and an oversight officer
   approves it (`POST /v1/policies/{version}/approve`); then decisions are sent
   continuously over keep-alive connections, at least one held by each worker (a
   connection's worker is found from /proc: which process of the server holds the
   socket), until every worker has answered with the new `policy_version`. Reported: the
   time from the approval's answer (and from its request) to the last worker's first new
   answer, median and max over the rounds, and any answer after the approval that still
   carried the old version. Target < 2 s.

    .venv/bin/python bench/replay.py [--events 1000000] [--rounds 3]
        [--database sqlite|postgresql|both] [--parts replay,ingest,approval]
        [--ingest-events 40000] [--keep DIR]

With `--keep DIR` the loaded SQLite file (DIR/replay-N.db) and PostgreSQL database
(`bench_replay_N` on --pg-server) are kept and reused by the next run; without it they are
fresh and dropped afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from harness import (
    PG_SERVER,
    POLICY_DIR,
    ROOT,
    RequestMix,
    Table,
    bootstrapped_service,
    cli_command,
    database,
    driver_dsn,
    free_port,
    machine,
    median,
    policy_for_today,
    roster,
    server,
    write_results,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

TARGET_RATIO = 0.5
TARGET_FACTS_COST = 0.10
TARGET_APPROVAL_S = 2.0
FETCH = 2000  # rows a fetch, as app.policy.replay.BATCH
SCAN_COLUMNS = (
    "seq, kind, occurred_at, recorded_at, actor, action, record_type, record_id, facility, "
    "purpose, justification, break_glass, decision, reasons, flags, policy_version, details"
)
SCAN_SQL = f"SELECT {SCAN_COLUMNS} FROM events WHERE kind IN ('decision', 'report') ORDER BY seq"
EARLIER_END_DAYS = 60
WORKERS = 4


def settings_env(url: str, workdir: Path) -> None:
    """The AUDIT_* environment `Settings()` reads, for this process (and its children)."""
    key = workdir / "signing.pem"
    if not key.exists():
        from app.ledger.signing import Signer

        key.write_bytes(Signer.new_key_pem())
    os.environ.update(
        AUDIT_DATABASE_URL=url,
        AUDIT_SECRET_KEY=os.environ.get("AUDIT_SECRET_KEY") or secrets.token_urlsafe(48),
        AUDIT_SIGNING_KEY_FILE=str(key),
        AUDIT_POLICY_DIR=str(POLICY_DIR),
    )


def candidate_content() -> dict[str, Any]:
    """The shipped policy with its mission window ending EARLIER_END_DAYS days early."""
    from app.policy.loader import load_policy

    policy = load_policy(POLICY_DIR)
    content = json.loads(json.dumps(dict(policy.content)))
    end = policy.window_end - timedelta(days=EARLIER_END_DAYS)
    content["mission"]["window_end"] = end.isoformat()
    return content


# --- 1. replay and impact -----------------------------------------------------------------


@contextmanager
def loaded_log(kind: str, args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    """A database holding the benchmark log with facts: kept under --keep, else fresh."""
    import mission_log

    from app.migrate import upgrade

    with ExitStack() as stack:
        if args.keep is None:
            url = stack.enter_context(database(kind, workdir, args.pg_server))
        elif kind == "sqlite":
            args.keep.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{args.keep / f'replay-{args.events}.db'}"
            upgrade(url)
        else:
            name = f"bench_replay_{args.events}"
            admin = create_engine(args.pg_server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                   {"n": name}):  # fmt: skip
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = make_url(args.pg_server).set(database=name).render_as_string(False)
            upgrade(url)
        held = mission_log.describe(url).events
        if held == 0:
            loaded = mission_log.load(url, args.events, args.seed, workdir / "load.pem", True)
            print(f"[{kind}] loaded {loaded.events:,} events with facts in "
                  f"{loaded.seconds:.0f} s", file=sys.stderr)  # fmt: skip
        elif held != args.events:
            raise SystemExit(f"{url} holds {held:,} events, not {args.events:,}: drop it")
        else:
            print(f"[{kind}] reusing {held:,} events at {url}", file=sys.stderr)
        yield url


class Scan:
    """The ceiling: the raw driver selecting the same rows and columns, decoding the JSON."""

    def __init__(self, url: str) -> None:
        self.url = url

    def run(self) -> int:
        if self.url.startswith("sqlite"):
            return self._sqlite()
        return self._postgresql()

    def _sqlite(self) -> int:
        path = make_url(self.url).database
        conn = sqlite3.connect(str(path))
        loads = json.loads
        count = 0
        try:
            cursor = conn.execute(SCAN_SQL)
            while rows := cursor.fetchmany(FETCH):
                for row in rows:
                    loads(row[13]), loads(row[14]), loads(row[16])
                count += len(rows)
        finally:
            conn.close()
        return count

    def _postgresql(self) -> int:
        import psycopg

        count = 0
        with psycopg.connect(driver_dsn(self.url)) as conn, conn.cursor(name="scan") as cursor:
            cursor.itersize = FETCH
            cursor.execute(SCAN_SQL)
            while rows := cursor.fetchmany(FETCH):  # jsonb decoded by psycopg (json.loads)
                count += len(rows)
        return count


def timed(what: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = what()
    return time.perf_counter() - started, result


def service_context() -> Any:
    from app.config import Settings
    from app.context import build_context

    return build_context(Settings())


def run_replay(context: Any, until: datetime | None = None) -> dict[str, Any]:
    """`access-audit replay`'s work: every problem counted, events counted by progress."""
    problems: Counter[str] = Counter()
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        done = count

    with context.database.reader() as session:
        for problem, _row, _outcome in context.policies.replay(session, None, until, progress):
            problems[problem] += 1
    return {"events": done, "problems": dict(problems)}


def run_impact(context: Any, version: str, until: datetime | None = None) -> dict[str, Any]:
    from app.policy.schemas import ImpactQuery

    with context.database.reader() as session:
        impact = context.policies.impact(session, version, ImpactQuery(until=until))
    return {
        "events": impact.evaluated + impact.without_facts,
        "evaluated": impact.evaluated,
        "changed": impact.changed,
        "allow_to_deny": impact.allow_to_deny,
        "deny_to_allow": impact.deny_to_allow,
        "without_facts": impact.without_facts,
        "by_reason": [r.model_dump() for r in impact.by_reason],
        "page": len(impact.events),
    }


def register_candidate(context: Any) -> str:
    """Compile the candidate into the book, as `content_of` does for a proposal."""
    from app.policy.loader import compile_content

    content = candidate_content()
    version = str(compile_content(content).version)
    context.book.compiled(version, content)
    return version


def memory_child(args: argparse.Namespace) -> int:
    """(In a child process) one pass over the log, printing its peak RSS growth."""
    context = service_context()
    version = register_candidate(context)
    until = datetime.fromisoformat(args.until) if args.until else None
    # ru_maxrss survives fork and exec (the parent's peak): reset the peak (VmHWM) instead.
    Path("/proc/self/clear_refs").write_text("5")
    before = _vm("VmHWM")
    started = time.perf_counter()
    if args.memory_child == "replay":
        result = run_replay(context, until)
    else:
        result = run_impact(context, version, until)
    seconds = time.perf_counter() - started
    peak = _vm("VmHWM")
    print(json.dumps({"events": result["events"], "seconds": seconds,
                      "rss_before_kib": before, "rss_peak_kib": peak,
                      "growth_kib": peak - before}))  # fmt: skip
    return 0


def _vm(field: str) -> int:
    """A size of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def tenth_instant(url: str) -> tuple[datetime, int]:
    """The occurred_at before which the first tenth of the decisions and reports lie."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            total = conn.scalar(text("SELECT count(*) FROM events WHERE kind IN "
                                     "('decision', 'report')")) or 0  # fmt: skip
            at = conn.scalar(text(
                "SELECT occurred_at FROM events WHERE kind IN ('decision', 'report') "
                "ORDER BY occurred_at LIMIT 1 OFFSET :k"), {"k": total // 10})  # fmt: skip
    finally:
        engine.dispose()
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at, total


def memory(url: str) -> dict[str, Any]:
    tenth, _ = tenth_instant(url)
    out: dict[str, Any] = {}
    for what in ("replay", "impact"):
        for label, until in (("tenth", tenth.isoformat()), ("all", None)):
            command = [sys.executable, __file__, "--memory-child", what]
            if until:
                command += ["--until", until]
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  env=os.environ.copy())  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"memory child failed:\n{done.stderr}")
            out[f"{what}_{label}"] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  memory {what} {label}: {out[f'{what}_{label}']}", file=sys.stderr)
    return out


def bench_replay(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aa-bench-replay-") as tmp:
        workdir = Path(tmp)
        with loaded_log(kind, args, workdir) as url:
            settings_env(url, workdir)
            context = service_context()
            version = register_candidate(context)
            scan = Scan(url)
            rounds: list[dict[str, Any]] = []
            try:
                for number in range(1, args.rounds + 1):
                    passes = {
                        "scan": scan.run,
                        "replay": lambda: run_replay(context),
                        "impact": lambda: run_impact(context, version),
                    }
                    order = list(passes) if number % 2 else list(reversed(passes))
                    took = {name: timed(passes[name]) for name in order}
                    rows = took["scan"][1]
                    replayed, impact = took["replay"][1], took["impact"][1]
                    if replayed["events"] != rows or impact["events"] != rows:
                        raise RuntimeError(f"scan {rows}, replay {replayed}, impact {impact}")
                    if replayed["problems"]:
                        raise RuntimeError(f"replay did not reproduce: {replayed['problems']}")
                    rate = {name: rows / took[name][0] for name in passes}
                    entry = {
                        "order": order,
                        "rows": rows,
                        "seconds": {name: took[name][0] for name in passes},
                        "rows_per_s": rate,
                        "replay_ratio": rate["replay"] / rate["scan"],
                        "impact_ratio": rate["impact"] / rate["scan"],
                        "impact": impact,
                    }
                    rounds.append(entry)
                    print(f"  [{kind}] round {number}: scan {rate['scan']:,.0f}/s, replay "
                          f"{rate['replay']:,.0f}/s ({entry['replay_ratio']:.2f}x), impact "
                          f"{rate['impact']:,.0f}/s ({entry['impact_ratio']:.2f}x)",
                          file=sys.stderr)  # fmt: skip
            finally:
                context.database.dispose()
            mem = memory(url) if not args.no_memory else None
    impact = rounds[-1]["impact"]
    return {
        "database": kind,
        "events": args.events,
        "access_rows": rounds[0]["rows"],
        "rounds": rounds,
        "scan_rows_per_s": median([r["rows_per_s"]["scan"] for r in rounds]),
        "replay_rows_per_s": median([r["rows_per_s"]["replay"] for r in rounds]),
        "impact_rows_per_s": median([r["rows_per_s"]["impact"] for r in rounds]),
        "replay_ratio": median([r["replay_ratio"] for r in rounds]),
        "impact_ratio": median([r["impact_ratio"] for r in rounds]),
        "replay_reproduced_every_round": True,  # a round that does not raises
        "impact_changed": impact["changed"],
        "impact_allow_to_deny": impact["allow_to_deny"],
        "memory": mem,
        "scan_driver": "sqlite3 fetchmany + json.loads" if kind == "sqlite"
        else "psycopg server-side cursor (jsonb decoded)",
    }  # fmt: skip


# --- 2. the cost of recording facts on ingest ---------------------------------------------


def bench_facts(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from ingest import BATCH, ingest, reported_events

    events = reported_events(args.ingest_events + 2 * BATCH, args.seed)
    bodies = [
        json.dumps({"events": events[i : i + BATCH]}).encode() for i in range(0, len(events), BATCH)
    ]
    warm, bodies = bodies[:2], bodies[2:]  # one batch for each server first, not counted
    # Rounds of batch pairs; within a round the pairs alternate ABBA (facts-none,
    # none-facts, ...), so the log's growth and the machine's drift weigh on both alike.
    pairs = max(1, len(bodies) // (2 * args.rounds))
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aa-bench-facts-") as tmp:
        workdir = Path(tmp)
        policy_dir, _ = policy_for_today(workdir, POLICY_DIR, True)
        without = [sys.executable, str(ROOT / "bench" / "serve_without_facts.py"), "serve",
                   "--host", "127.0.0.1"]  # fmt: skip
        with (
            database(kind, workdir, args.pg_server) as url,
            bootstrapped_service(url, policy_dir, workdir, roster()) as service,
        ):
            port = free_port()
            command = [*without, "--port", str(port), "--workers", "1"]
            with server(command, service.env, port, workdir / "nofacts.log", workdir) as bare:
                headers = {"Authorization": f"Bearer {service.token}",
                           "Content-Type": "application/json"}  # fmt: skip
                with (
                    httpx.Client(base_url=service.running.base, headers=headers,
                                 timeout=300) as with_facts,
                    httpx.Client(base_url=bare.base, headers=headers, timeout=300) as no_facts,
                ):  # fmt: skip
                    ingest(with_facts, warm[:1])
                    ingest(no_facts, warm[1:])
                    pair = {"facts": with_facts, "none": no_facts}
                    batch_rates: dict[str, list[float]] = {name: [] for name in pair}
                    queue = iter(bodies)
                    for number in range(args.rounds):
                        got = {name: {"events": 0, "seconds": 0.0} for name in pair}
                        for p in range(pairs):
                            order = ["facts", "none"] if p % 2 == 0 else ["none", "facts"]
                            for name in order:
                                result = ingest(pair[name], [next(queue)])
                                batch_rates[name].append(result["events"] / result["seconds"])
                                got[name]["events"] += result["events"]
                                got[name]["seconds"] += result["seconds"]
                        for side in got.values():
                            side["events_per_s"] = side["events"] / side["seconds"]
                        cost = got["none"]["events_per_s"] / got["facts"]["events_per_s"] - 1
                        rounds.append({"batch_pairs": pairs, **got, "cost": cost})
                        print(f"  [{kind}] facts round {number + 1}: with "
                              f"{got['facts']['events_per_s']:,.0f}/s, without "
                              f"{got['none']['events_per_s']:,.0f}/s, cost {cost:+.1%}",
                              file=sys.stderr)  # fmt: skip
                facts_recorded = _facts_recorded(url)
    return {
        "database": kind,
        "events": args.ingest_events,
        "rounds": rounds,
        # The figure: the batches' median rates, each side's over all its batches. A stall
        # of the machine (a WAL checkpoint, another process) lands in one batch, and so in
        # one round's ratio, which it can swing by 30%; it barely moves a median of 100.
        "with_facts_events_per_s": median(batch_rates["facts"]),
        "without_facts_events_per_s": median(batch_rates["none"]),
        "cost": median(batch_rates["none"]) / median(batch_rates["facts"]) - 1,
        "rounds_median_cost": median([r["cost"] for r in rounds]),
        "reports_by_facts": facts_recorded,
    }


def _facts_recorded(url: str) -> dict[str, int]:
    """How many reports the log holds with and without details.facts (the switch worked)."""
    engine = create_engine(url)
    counts: Counter[str] = Counter()
    try:
        with engine.connect() as conn:
            for (details,) in conn.execute(text("SELECT details FROM events "
                                                "WHERE kind = 'report'")):  # fmt: skip
                if isinstance(details, str):
                    details = json.loads(details)
                counts["with" if "facts" in (details or {}) else "without"] += 1
    finally:
        engine.dispose()
    return dict(counts)


# --- 3. from approval to every worker -----------------------------------------------------


def add_user(env: dict[str, str], workdir: Path, name: str, role: str) -> str:
    password = secrets.token_urlsafe(18)
    done = subprocess.run(
        [*cli_command(), "users", "add", name, "--role", role, "--password", "-"],
        input=password + "\n", env=env, cwd=workdir, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"users add {name} failed:\n{done.stderr}")
    return password


def password_token(base: str, username: str, password: str) -> str:
    response = httpx.post(base + "/v1/auth/token", timeout=30,
                          data={"grant_type": "password", "username": username,
                                "password": password})  # fmt: skip
    response.raise_for_status()
    return str(response.json()["access_token"])


def _socket_owners(group: int, port: int) -> dict[int, int]:
    """Client port -> pid of the server process (of process group `group`) holding the
    accepted socket of that connection to `port` (from /proc)."""
    inodes: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[int(target[8:-1])] = int(entry.name)
        except (OSError, ProcessLookupError):
            continue
    owners: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                owners[int(remote.rsplit(":", 1)[1], 16)] = inodes[inode]
    return owners


class Connection:
    """A keep-alive HTTP connection to one worker."""

    def __init__(self, port: int, token: str) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.http.connect()
        self.local_port = self.http.sock.getsockname()[1]
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.worker = 0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.http.request("POST", path, json.dumps(body).encode(), self.headers)
        response = self.http.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path} -> {response.status}: {payload[:300]!r}")
        return dict(json.loads(payload))


def bench_approval(args: argparse.Namespace) -> dict[str, Any]:
    from app.policy.loader import load_policy

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aa-bench-approval-") as tmp:
        workdir = Path(tmp)
        policy_dir, _ = policy_for_today(workdir, POLICY_DIR, True)
        base_content = dict(load_policy(policy_dir).content)
        with (
            database("postgresql", workdir, args.pg_server) as url,
            bootstrapped_service(url, policy_dir, workdir, roster(), workers=WORKERS) as service,
        ):
            base = service.running.base
            port = int(base.rsplit(":", 1)[1])
            proposer = add_user(service.env, workdir, "bench.proposer", "admin")
            officer = add_user(service.env, workdir, "bench.officer", "oversight")
            admin_token = password_token(base, "bench.proposer", proposer)
            officer_token = password_token(base, "bench.officer", officer)
            connections: list[Connection] = []
            owners: dict[int, int] = {}
            mix = RequestMix(roster(), seed=args.seed)
            while len(set(owners.values())) < WORKERS and len(connections) < 64:
                conn = Connection(port, service.token)
                conn.post("/v1/decisions", mix.next()[1])  # accepted, and answered
                connections.append(conn)
                owners = _socket_owners(service.running.pid, port)
            for conn in connections:
                conn.worker = owners.get(conn.local_port, 0)
            workers = sorted({c.worker for c in connections} - {0})
            if len(workers) < WORKERS:
                raise RuntimeError(f"found connections to {len(workers)} workers only")
            print(f"  [postgresql] {len(connections)} connections over workers {workers}",
                  file=sys.stderr)  # fmt: skip
            content = json.loads(json.dumps(base_content))
            end = datetime.fromisoformat(content["mission"]["window_end"]).date()
            with httpx.Client(base_url=base, timeout=60) as api:
                for number in range(1, args.approval_rounds + 1):
                    content["mission"]["window_end"] = (end + timedelta(days=number)).isoformat()
                    proposed = api.post("/v1/policies", headers={
                        "Authorization": f"Bearer {admin_token}"}, json={
                        "content": content, "authority": f"Bench order {number}"})  # fmt: skip
                    if proposed.status_code != 201 and proposed.status_code != 200:
                        raise RuntimeError(f"propose -> {proposed.status_code}: {proposed.text}")
                    version = proposed.json()["version"]
                    rounds.append(_one_approval(api, officer_token, version, connections, mix))
                    r = rounds[-1]
                    print(f"  [postgresql] approval round {number}: every worker after "
                          f"{r['seconds_from_answer']*1000:.0f} ms (from the request: "
                          f"{r['seconds_from_request']*1000:.0f} ms), {r['requests']} "
                          f"requests, {r['stale_answers']} stale", file=sys.stderr)  # fmt: skip
            for conn in connections:
                conn.http.close()
    from_answer = [r["seconds_from_answer"] for r in rounds]
    return {
        "database": "postgresql",
        "workers": WORKERS,
        "connections": len(connections),
        "rounds": rounds,
        "median_s": median(from_answer),
        "max_s": max(from_answer),
        "median_from_request_s": median([r["seconds_from_request"] for r in rounds]),
        "max_from_request_s": max(r["seconds_from_request"] for r in rounds),
        "stale_answers": sum(r["stale_answers"] for r in rounds),
    }


def _one_approval(
    api: httpx.Client, token: str, version: str, connections: list[Connection], mix: RequestMix
) -> dict[str, Any]:
    """Approve `version`, then decide on every connection until every worker answers by it."""
    workers = {c.worker for c in connections}
    first_new: dict[int, float] = {}
    stale = 0
    requests = 0
    lock = threading.Lock()
    stop = threading.Event()
    bodies = [mix.next()[1] for _ in range(4000)]
    start_request = time.perf_counter()
    approved = api.post(f"/v1/policies/{version}/approve",
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    answered = time.perf_counter()
    if approved.status_code != 200:
        raise RuntimeError(f"approve -> {approved.status_code}: {approved.text}")

    def send(conn: Connection, offset: int) -> None:
        nonlocal stale, requests
        i = offset
        while not stop.is_set():
            result = conn.post("/v1/decisions", bodies[i % len(bodies)])
            at = time.perf_counter()
            i += len(connections)
            with lock:
                requests += 1
                if result["policy_version"] == version:
                    first_new.setdefault(conn.worker, at)
                    if set(first_new) == workers:
                        stop.set()
                else:
                    stale += 1
            if at - answered > 30:
                stop.set()

    threads = [threading.Thread(target=send, args=(c, i)) for i, c in enumerate(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if set(first_new) != workers:
        raise RuntimeError(f"after 30 s only workers {sorted(first_new)} judge by {version}")
    last = max(first_new.values())
    return {
        "version": version,
        "approve_ms": (answered - start_request) * 1000,
        "seconds_from_answer": last - answered,
        "seconds_from_request": last - start_request,
        "requests": requests,
        "stale_answers": stale,
    }


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of replay/impact/scan "
                        "and of ingest with/without facts")  # fmt: skip
    parser.add_argument("--approval-rounds", type=int, default=7)
    parser.add_argument("--ingest-events", type=int, default=40_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--parts", default="replay,ingest,approval")
    parser.add_argument("--pg-server", default=PG_SERVER, help="where to CREATE DATABASE")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the loaded logs here")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory passes")
    parser.add_argument("--load-only", action="store_true", help="load the --keep logs; stop")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--name", default="replay", help="bench/results/NAME.json")
    parser.add_argument("--memory-child", choices=["replay", "impact"], help=argparse.SUPPRESS)
    parser.add_argument("--until", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args)
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if args.load_only:
        if args.keep is None:
            parser.error("--load-only needs --keep")
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp, loaded_log(kind, args, Path(tmp)):
                pass
        return 0
    parts = set(args.parts.split(","))
    replays = [bench_replay(k, args) for k in kinds] if "replay" in parts else []
    facts = [bench_facts(k, args) for k in kinds] if "ingest" in parts else []
    approval = bench_approval(args) if "approval" in parts and "postgresql" in kinds else None

    if replays:
        table = Table(["database", "events", "rows", "scan rows/s", "replay rows/s", "ratio",
                       "impact rows/s", "ratio", "met", "replay RSS +MiB 1/10 -> all",
                       "impact RSS +MiB 1/10 -> all"])  # fmt: skip
        for r in replays:
            m = r["memory"]

            def grow(what: str, m: Any = m) -> str:
                if not m:
                    return "-"
                return (f"{m[what + '_tenth']['growth_kib'] / 1024:.1f} -> "
                        f"{m[what + '_all']['growth_kib'] / 1024:.1f}")  # fmt: skip

            met = min(r["replay_ratio"], r["impact_ratio"]) >= TARGET_RATIO
            table.add(r["database"], r["events"], r["access_rows"], r["scan_rows_per_s"],
                      r["replay_rows_per_s"], f"{r['replay_ratio']:.2f}",
                      r["impact_rows_per_s"], f"{r['impact_ratio']:.2f}",
                      "yes" if met else "NO", grow("replay"), grow("impact"))  # fmt: skip
        print(table.render())
        print(
            f"target: replay and impact rows/s >= {TARGET_RATIO} x the raw driver's scan of "
            f"the same rows and columns with the JSON decoded (median of {args.rounds} "
            "rounds' ratios); RSS: peak growth of a child process over the pass"
        )
    if facts:
        table = Table(["database", "events", "with facts ev/s", "without ev/s", "cost",
                       "rounds' median", "met"])  # fmt: skip
        for f in facts:
            table.add(f["database"], f["events"], f["with_facts_events_per_s"],
                      f["without_facts_events_per_s"],
                      f"{f['cost']:+.1%}", f"{f['rounds_median_cost']:+.1%}",
                      "yes" if f["cost"] <= TARGET_FACTS_COST else "NO")  # fmt: skip
        print(table.render())
        print(
            f"target: recording facts costs <= {TARGET_FACTS_COST:.0%} of ingest "
            "(median batch rates over all batches, alternating ABBA in "
            f"{args.rounds} rounds)"
        )
    if approval:
        table = Table(
            [
                "database",
                "workers",
                "rounds",
                "median ms",
                "max ms",
                "median ms from request",
                "max ms from request",
                "stale",
                "met",
            ]
        )
        table.add("postgresql", WORKERS, len(approval["rounds"]), approval["median_s"] * 1000,
                  approval["max_s"] * 1000, approval["median_from_request_s"] * 1000,
                  approval["max_from_request_s"] * 1000, approval["stale_answers"],
                  "yes" if approval["max_s"] < TARGET_APPROVAL_S else "NO")  # fmt: skip
        print(table.render())
        print(
            f"target: from the approval's answer to every worker's first answer by the new "
            f"version < {TARGET_APPROVAL_S} s"
        )
    path = write_results(args.name, {
        "benchmark": "replay", "events": args.events, "rounds": args.rounds,
        "machine": machine(), "replay": replays, "facts": facts, "approval": approval,
        "targets": {"ratio": TARGET_RATIO, "facts_cost": TARGET_FACTS_COST,
                    "approval_s": TARGET_APPROVAL_S},
    })  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
