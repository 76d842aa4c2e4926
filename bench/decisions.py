"""Decision throughput: POST /v1/decisions on the real server against a trivial endpoint, by wrk.

For each database (a fresh SQLite file; a fresh PostgreSQL database, dropped afterwards):
migrate, bootstrap an admin with `access-audit users add`, start `access-audit serve` (one
worker), create the actors and an integration client over its HTTP API, and start beside it
bench/trivial_app.py (the same request model, parsed and answered with a constant: no auth,
no database) under uvicorn with the same options. Both run throughout; the benchmark talks
to them over HTTP only.

The load is wrk (`-t1`: on a two-core machine the load generator must not take more than it
needs) with bench/decisions.lua, which cycles through pre-built bodies of the realistic
request mix (`harness.RequestMix`), each with its own client_event_id, and reports in done()
requests, duration, socket errors, statuses and the latency histogram.

1. The mix, at each concurrency (default 16 and 64 keep-alive connections): a warm-up of
   each endpoint, then rounds that alternate them (service, trivial, service, trivial...,
   each round on fresh bodies, the trivial endpoint getting the very bodies the service
   just had), so that a drift of the machine's speed weighs on both alike. Reported: the
   median req/s of each, the median of the per-round ratios, the service's p50/p99 over
   every round, the non-2xx answers and socket errors, and the server CPU per request of
   each endpoint (its process's /proc/<pid>/stat; on PostgreSQL also the CPU of the
   database's backends, which the service spends beside its own).
2. A single actor (`--single-actor`, on by default): one allowed decision body, the same
   every time and without a client_event_id, so that every request appends to the log of
   one actor, at 16 connections, in six 10-s service segments each followed by a 10-s
   trivial segment. Reported: the service's rate in the first and the last segment, their
   ratio, and the median ratio of each service segment to the trivial one after it.

Targets: the ratio >= 0.5 at 16 connections; the service's p99 < 25 ms; no non-2xx answer
and no socket error; single actor: last segment >= 0.9 x first, ratio >= 0.5.

    .venv/bin/python bench/decisions.py [--rounds 4] [--seconds 8] [--concurrency 16 64]
        [--database sqlite|postgresql|both] [--no-single-actor] [--segment-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    HOST,
    PG_SERVER,
    POLICY_DIR,
    VENV_BIN,
    RequestMix,
    Running,
    Service,
    Table,
    backend_cpu,
    backend_cpu_spent,
    bootstrapped_service,
    client_token,
    database,
    free_port,
    machine,
    median,
    policy_for_today,
    roster,
    server,
    write_results,
)

TARGET_RATIO = 0.5  # at TARGET_RATIO_AT connections
TARGET_RATIO_AT = 16
TARGET_P99_MS = 25.0
TARGET_DRIFT = 0.9  # single actor: last segment >= this x the first
PATH = "/v1/decisions"
BENCH_DIR = Path(__file__).resolve().parent
LUA = BENCH_DIR / "decisions.lua"
MARKER = "WRK_RESULT "
TOKEN_REFRESH_S = 300  # the service's tokens live 15 minutes by default
SINGLE_ACTOR = {  # allowed: a Greene clerk reading a Greene case for a records request
    "actor": "clerk.grn00",
    "action": "read_case",
    "record": {"type": "detainee_case", "id": "GRN-2026-00042", "facility": "greene"},
    "purpose": "records_request",
    "workstation": "WS-07",
}


def ensure_wrk() -> str:
    """wrk's path; installed with apt-get when it is missing (the benchmark runs as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(install, check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


def wrk_version(wrk: str) -> str:
    """E.g. `wrk 4.1.0 [epoll]` (wrk --version says it, and its copyright, and exits 1)."""
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    return lines[0].split(" Copyright")[0].strip() if lines else "wrk"


def trivial_server_command(port: int) -> list[str]:
    """bench/trivial_app.py under uvicorn with the options `access-audit serve` passes."""
    return [
        str(VENV_BIN / "uvicorn"),
        "trivial_app:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-proxy-headers",
        "--log-level",
        "info",
        "--no-access-log",
        "--http",
        "h11",
        "--loop",
        "asyncio",
    ]


class Bodies:
    """Files of decision bodies for wrk: the realistic mix, one stream for the whole run, so
    that every body (and its client_event_id) is new to the service."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.mix = RequestMix(roster(), seed=seed)
        self.run = secrets.token_hex(3)
        self.made = 0
        self.files = 0

    def file(self, n: int) -> Path:
        self.files += 1
        path = self.workdir / f"bodies-{self.files:03d}.jsonl"
        with path.open("w") as out:
            for _ in range(n):
                _, body = self.mix.next()
                body["client_event_id"] = f"cms-{self.run}-{self.made:08d}"
                self.made += 1
                out.write(json.dumps(body, separators=(",", ":")) + "\n")
        return path


class Token:
    """The integration client's bearer token, renewed before it can expire mid-run."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.value = service.token
        self.at = time.monotonic()

    def get(self) -> str:
        if time.monotonic() - self.at > TOKEN_REFRESH_S:
            s = self.service
            self.value = client_token(s.running.base, s.client_id, s.client_secret)
            self.at = time.monotonic()
        return self.value


@dataclass
class Run:
    """What one wrk run saw, and what the server spent on it."""

    requests: int
    seconds: float
    statuses: dict[str, int]
    socket_errors: int
    decisions: dict[str, int]
    duplicates: int
    wrapped: int
    histogram: dict[int, int]  # latency in µs -> count
    p50_ms: float
    p99_ms: float
    cpu_s: float | None
    db_cpu_s: float | None
    idle_cpu_s: float | None  # the other server's, meanwhile (it should be idle)

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.statuses.items() if 200 <= int(code) < 300)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "seconds": self.seconds,
            "requests_per_s": self.rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "non_2xx": self.requests - self.ok,
            "socket_errors": self.socket_errors,
            "statuses": self.statuses,
            "decisions": self.decisions,
            "duplicates": self.duplicates,
            "bodies_wrapped": self.wrapped,
            "server_cpu_ms_per_request": per_request(self.cpu_s, self.requests),
            "db_cpu_ms_per_request": per_request(self.db_cpu_s, self.requests),
            "idle_server_cpu_s": self.idle_cpu_s,
        }


def per_request(seconds: float | None, requests: int) -> float | None:
    return None if seconds is None or not requests else seconds * 1000 / requests


def drive(
    wrk: str,
    running: Running,
    connections: int,
    seconds: int,
    bodies: Path,
    token: str | None,
    idle: Running | None,
    database_url: str | None = None,
) -> Run:
    """One wrk run against `running`, and the CPU it and the database's backends spent (and
    the `idle` server, if any, which should spend next to none)."""
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        running.base + PATH,
        "--",
        str(bodies),
        token or "-",
        "0",
    ]
    db_before = backend_cpu(database_url) if database_url else None
    before, idle_before = running.cpu_seconds(), idle.cpu_seconds() if idle else None
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    after, idle_after = running.cpu_seconds(), idle.cpu_seconds() if idle else None
    db_after = backend_cpu(database_url) if database_url else None
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    report = json.loads(lines[-1][len(MARKER) :])
    errors = report["errors"]
    histogram = {int(value): int(count) for value, count in report["histogram"]}
    latency = report["latency_us"]
    return Run(
        requests=int(report["requests"]),
        seconds=report["duration_us"] / 1e6,
        statuses={k: int(v) for k, v in sorted(report["statuses"].items())},
        socket_errors=sum(int(errors[k]) for k in ("connect", "read", "write", "timeout")),
        decisions={k: int(v) for k, v in sorted(report["decisions"].items())},
        duplicates=int(report["duplicates"]),
        wrapped=int(report["wrapped"]),
        histogram=histogram,
        p50_ms=(latency["p50"] or math.nan) / 1000,
        p99_ms=(latency["p99"] or math.nan) / 1000,
        cpu_s=None if before is None or after is None else after - before,
        db_cpu_s=backend_cpu_spent(db_before, db_after),
        idle_cpu_s=None if idle_before is None or idle_after is None else idle_after - idle_before,
    )


def histogram_percentile(histogram: dict[int, int], p: float) -> float:
    """The p-th percentile (nearest rank) of a merged latency histogram, in ms."""
    total = sum(histogram.values())
    if not total:
        return math.nan
    rank = max(1, min(total, math.ceil(p / 100 * total)))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value / 1000
    return max(histogram) / 1000


@dataclass
class Totals:
    """Several runs of one endpoint: the median rate and the merged latencies."""

    runs: list[Run] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        histogram: Counter[int] = Counter()
        statuses: Counter[str] = Counter()
        decisions: Counter[str] = Counter()
        for run in self.runs:
            histogram.update(run.histogram)
            statuses.update(run.statuses)
            decisions.update(run.decisions)
        requests = sum(r.requests for r in self.runs)
        cpu = [r.cpu_s for r in self.runs]
        db_cpu = [r.db_cpu_s for r in self.runs]
        return {
            "rounds": len(self.runs),
            "requests": requests,
            "ok": sum(r.ok for r in self.runs),
            "requests_per_s": median([r.rate for r in self.runs]),
            "requests_per_s_by_round": [r.rate for r in self.runs],
            "p50_ms": histogram_percentile(histogram, 50),
            "p99_ms": histogram_percentile(histogram, 99),
            "max_ms": max(histogram, default=0) / 1000,
            "non_2xx": requests - sum(r.ok for r in self.runs),
            "socket_errors": sum(r.socket_errors for r in self.runs),
            "statuses": dict(sorted(statuses.items())),
            "decisions": dict(sorted(decisions.items())),
            "duplicates": sum(r.duplicates for r in self.runs),
            "bodies_wrapped": sum(r.wrapped for r in self.runs),
            "server_cpu_ms_per_request": None
            if None in cpu
            else per_request(sum(c or 0.0 for c in cpu), requests),
            "db_cpu_ms_per_request": None
            if None in db_cpu
            else per_request(sum(c or 0.0 for c in db_cpu), requests),
        }


def body_count(rate: float, seconds: int, connections: int) -> int:
    """Bodies enough for a run of `seconds` at twice `rate`, so that none is sent twice."""
    return math.ceil(2 * rate * seconds) + 4 * connections + 100


def bench_mix(
    wrk: str,
    servers: dict[str, Running],
    token: Token,
    bodies: Bodies,
    connections: int,
    args: argparse.Namespace,
    database_url: str,
    guess: list[float],
) -> dict[str, Any]:
    """Warm-up, then rounds alternating the service and the trivial endpoint."""
    service, trivial = servers["service"], servers["trivial"]
    db = database_url if database_url.startswith("postgresql") else None
    warm = bodies.file(body_count(guess[0], args.warmup_seconds, connections))
    warm_run = drive(wrk, service, connections, args.warmup_seconds, warm, token.get(), trivial, db)
    guess[0] = max(guess[0], warm_run.rate)
    drive(wrk, trivial, connections, args.warmup_seconds, warm, None, service)
    totals = {"service": Totals(), "trivial": Totals()}
    ratios: list[float] = []
    for number in range(1, args.rounds + 1):
        chunk = bodies.file(body_count(guess[0], args.seconds, connections))
        ran = drive(wrk, service, connections, args.seconds, chunk, token.get(), trivial, db)
        guess[0] = max(guess[0], ran.rate)
        versus = drive(wrk, trivial, connections, args.seconds, chunk, None, service)
        totals["service"].runs.append(ran)
        totals["trivial"].runs.append(versus)
        ratios.append(ran.rate / versus.rate if versus.rate else 0.0)
        print(
            f"  {connections} connections, round {number}: service {ran.rate:,.0f}/s "
            f"(p99 {ran.p99_ms:.1f} ms), trivial {versus.rate:,.0f}/s, "
            f"ratio {ratios[-1]:.3f}",
            file=sys.stderr,
        )
    result = {
        "connections": connections,
        "service": totals["service"].summary(),
        "trivial": totals["trivial"].summary(),
        "ratio": median(ratios),
        "ratio_by_round": ratios,
        "rounds_detail": [
            {"service": s.summary(), "trivial": t.summary()}
            for s, t in zip(totals["service"].runs, totals["trivial"].runs, strict=True)
        ],
    }
    s = result["service"]
    result["meets"] = {
        "ratio": None if connections != TARGET_RATIO_AT else result["ratio"] >= TARGET_RATIO,
        "p99": s["p99_ms"] < TARGET_P99_MS,
        "errors": s["non_2xx"] == 0 and s["socket_errors"] == 0,
        "fresh_bodies": s["duplicates"] == 0 and s["bodies_wrapped"] == 0,
    }
    return result


def bench_single_actor(
    wrk: str,
    servers: dict[str, Running],
    token: Token,
    workdir: Path,
    args: argparse.Namespace,
    database_url: str,
) -> dict[str, Any]:
    """One actor, one body, every request appending: does the service slow down?"""
    body = workdir / "single-actor.jsonl"
    body.write_text(json.dumps(SINGLE_ACTOR, separators=(",", ":")) + "\n")
    db = database_url if database_url.startswith("postgresql") else None
    service, trivial = servers["service"], servers["trivial"]
    connections, seconds = args.single_actor_connections, args.segment_seconds
    segments: list[dict[str, Any]] = []
    totals = {"service": Totals(), "trivial": Totals()}
    for number in range(1, args.segments + 1):
        ran = drive(wrk, service, connections, seconds, body, token.get(), trivial, db)
        versus = drive(wrk, trivial, connections, seconds, body, None, service)
        totals["service"].runs.append(ran)
        totals["trivial"].runs.append(versus)
        segments.append(
            {
                "service": ran.summary(),
                "trivial": versus.summary(),
                "ratio": ran.rate / versus.rate if versus.rate else 0.0,
            }
        )
        print(
            f"  single actor, segment {number}: service {ran.rate:,.0f}/s "
            f"(p99 {ran.p99_ms:.1f} ms), trivial {versus.rate:,.0f}/s",
            file=sys.stderr,
        )
    first, last = segments[0]["service"], segments[-1]["service"]
    drift = last["requests_per_s"] / first["requests_per_s"] if first["requests_per_s"] else 0.0
    ratio = median([s["ratio"] for s in segments])
    summary = totals["service"].summary()
    return {
        "actor": SINGLE_ACTOR["actor"],
        "body": SINGLE_ACTOR,
        "connections": connections,
        "segment_seconds": seconds,
        "first_per_s": first["requests_per_s"],
        "last_per_s": last["requests_per_s"],
        "last_over_first": drift,
        "ratio": ratio,
        "service": summary,
        "trivial": totals["trivial"].summary(),
        "segments": segments,
        "meets": {
            "drift": drift >= TARGET_DRIFT,
            "ratio": ratio >= TARGET_RATIO,
            "errors": summary["non_2xx"] == 0 and summary["socket_errors"] == 0,
            "all_allowed": set(summary["decisions"]) == {"allow"},
        },
    }


def bench_database(kind: str, wrk: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aa-bench-decisions-") as tmp:
        workdir = Path(tmp)
        policy_dir, extended = policy_for_today(workdir, args.policy_dir, not args.shipped_policy)
        with (
            database(kind, workdir, args.pg_server) as url,
            bootstrapped_service(url, policy_dir, workdir, roster()) as service,
        ):
            print(f"[{kind}] {service.bootstrap_line()}", file=sys.stderr)
            port = free_port()
            command = trivial_server_command(port)
            with server(command, service.env, port, workdir / "trivial.log", workdir) as trivial:
                servers = {"service": service.running, "trivial": trivial}
                token = Token(service)
                bodies = Bodies(workdir, args.seed)
                guess = [1000.0]
                mix = [
                    bench_mix(wrk, servers, token, bodies, c, args, url, guess)
                    for c in args.concurrency
                ]
                single = (
                    bench_single_actor(wrk, servers, token, workdir, args, url)
                    if args.single_actor
                    else None
                )
            bootstrap = service.bootstrap_facts()
    return {
        "database": kind,
        "bootstrap": bootstrap,
        "mix": mix,
        "single_actor": single,
        "policy_window_extended_to": extended,
    }


def yes(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "NO")


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternate the two endpoints this many times"
    )
    parser.add_argument("--seconds", type=int, default=8, help="length of each endpoint's round")
    parser.add_argument("--warmup-seconds", type=int, default=3)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[16, 64], help="connections (each a run)"
    )
    parser.add_argument(
        "--single-actor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the single-actor section",
    )
    parser.add_argument("--segments", type=int, default=6, help="single actor: service segments")
    parser.add_argument("--segment-seconds", type=int, default=10)
    parser.add_argument("--single-actor-connections", type=int, default=16)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-server", default=PG_SERVER, help="where to CREATE DATABASE")
    parser.add_argument("--policy-dir", type=Path, default=POLICY_DIR)
    parser.add_argument(
        "--shipped-policy",
        action="store_true",
        help="serve the policy as shipped even when today is past its window",
    )
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50 or not 1 <= args.seconds <= 600:
        parser.error("--rounds must be 1-50 and --seconds 1-600")
    if not 1 <= args.warmup_seconds <= 600 or not 1 <= args.segment_seconds <= 600:
        parser.error("--warmup-seconds and --segment-seconds must be 1-600")
    if not 1 <= args.segments <= 60:
        parser.error("--segments must be 1-60")
    if any(not 1 <= c <= 256 for c in [*args.concurrency, args.single_actor_connections]):
        parser.error("connections must be 1-256")
    wrk = ensure_wrk()
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [bench_database(kind, wrk, args) for kind in kinds]

    table = Table(
        [
            "database",
            "conns",
            "endpoint",
            "req/s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "sock err",
            "CPU ms/req",
            "db CPU ms/req",
            "ratio",
            "ratio>=0.5",
            "p99<25",
            "no errors",
        ]
    )
    for r in results:
        for m in r["mix"]:
            for name in ("service", "trivial"):
                s = m[name]
                is_service = name == "service"
                table.add(
                    r["database"],
                    m["connections"],
                    PATH if is_service else "trivial",
                    s["requests_per_s"],
                    s["p50_ms"],
                    s["p99_ms"],
                    s["non_2xx"],
                    s["socket_errors"],
                    ms(s["server_cpu_ms_per_request"]),
                    ms(s["db_cpu_ms_per_request"]),
                    f"{m['ratio']:.3f}" if is_service else "",
                    yes(m["meets"]["ratio"]) if is_service else "",
                    yes(m["meets"]["p99"]) if is_service else "",
                    yes(m["meets"]["errors"]) if is_service else "",
                )
    print(table.render())
    print(
        f"ratio: median over {args.rounds} rounds of {args.seconds} s alternating the two "
        f"endpoints (wrk -t1); targets: ratio >= {TARGET_RATIO} at {TARGET_RATIO_AT} "
        f"connections, service p99 < {TARGET_P99_MS:.0f} ms, no non-2xx or socket error; "
        "CPU: the server process's, and on PostgreSQL its backends' (db CPU)"
    )
    singles = [r for r in results if r["single_actor"]]
    if singles:
        single = Table(
            [
                "database",
                "actor",
                "first req/s",
                "last req/s",
                "last/first",
                "ratio",
                "p99 ms",
                "non-2xx",
                "last>=0.9x",
                "ratio>=0.5",
            ]
        )
        for r in singles:
            s = r["single_actor"]
            single.add(
                r["database"],
                s["actor"],
                s["first_per_s"],
                s["last_per_s"],
                f"{s['last_over_first']:.3f}",
                f"{s['ratio']:.3f}",
                s["service"]["p99_ms"],
                s["service"]["non_2xx"] + s["service"]["socket_errors"],
                yes(s["meets"]["drift"]),
                yes(s["meets"]["ratio"]),
            )
        print()
        print(single.render())
        first = singles[0]["single_actor"]
        print(
            f"single actor: {args.segments} service segments of {args.segment_seconds} s at "
            f"{first['connections']} connections, each followed by a trivial one; ratio: "
            f"median of the segments' ratios; targets: last >= {TARGET_DRIFT} x first, "
            f"ratio >= {TARGET_RATIO}"
        )
    for r in singles:
        s = r["single_actor"]
        if not s["meets"]["all_allowed"]:
            print(f"{r['database']}: WARNING single actor not always allowed: "
                  f"{s['service']['decisions']}")  # fmt: skip
    for r in results:
        for m in r["mix"]:
            s = m["service"]
            print(f"{r['database']}, {m['connections']} connections: decisions {s['decisions']}")
            if not m["meets"]["fresh_bodies"]:
                print(
                    f"{r['database']}: WARNING some bodies were sent twice "
                    f"({s['duplicates']} duplicate answers, {s['bodies_wrapped']} wraps)"
                )
        if r["policy_window_extended_to"]:
            print(
                f"{r['database']}: served a copy of the policy with window_end "
                f"{r['policy_window_extended_to']} (today is past the shipped window)"
            )
    path = write_results(
        "decisions",
        {
            "benchmark": "decisions",
            "load_generator": wrk_version(wrk) + " -t1",
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup_seconds,
            "concurrency": args.concurrency,
            "segments": args.segments if args.single_actor else None,
            "segment_seconds": args.segment_seconds if args.single_actor else None,
            "targets": {
                "ratio": TARGET_RATIO,
                "ratio_at_connections": TARGET_RATIO_AT,
                "p99_ms": TARGET_P99_MS,
                "single_actor_last_over_first": TARGET_DRIFT,
            },
            "machine": machine(),
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
