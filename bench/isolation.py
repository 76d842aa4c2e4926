"""Isolation: ordinary decisions with and without a login flood and a poisoned-decision flood.

For each database: the real server (`access-audit serve`, one worker on SQLite, `--workers`
on PostgreSQL), bootstrapped as the other benchmarks are. In rounds that alternate:

1. quiet: ordinary decisions of the realistic mix, by wrk (`--connections`, closed loop);
2. flooded: the same, while two more wrk processes flood the service from the same machine:
   wrong passwords for unknown users on `POST /v1/auth/token` (no token needed: what anyone
   can send), and decisions whose actor holds a NUL byte (with the integration's token: a
   buggy or hostile client).

Reported: the ordinary decisions' p50/p99 quiet and flooded (merged over the rounds), the
ratio of the p99s, the ordinary decisions that failed (any non-2xx or socket error), what
the floods got back (by status) and the login events the floods left in the log (counted
over the API: oversight sees the attempts, in aggregate, not one row a packet). Target:
flooded p99 <= 2 x the quiet p99, and zero failed ordinary decisions.

The floods run closed loop as fast as the service answers them: on this two-core machine
they take CPU from the service's event loop, the load generators and the database alike,
so the p99 ratio is an upper bound on the harm one request can do to another.

    .venv/bin/python bench/isolation.py [--database sqlite|postgresql|both] [--rounds 3]
        [--seconds 8] [--connections 4] [--flood-connections 8] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from decisions import LUA, MARKER, Bodies, Run, Token, drive, ensure_wrk, histogram_percentile
from harness import (
    HOST,
    POLICY_DIR,
    Table,
    bootstrapped_service,
    cli_command,
    database,
    machine,
    policy_for_today,
    roster,
    write_results,
)

TARGET_P99_RATIO = 2.0


def flood_files(workdir: Path) -> dict[str, tuple[str, Path, str]]:
    """Each flood: its path, a file of its bodies, their content type."""
    logins = workdir / "flood-logins.txt"
    logins.write_text("".join(
        f"grant_type=password&username=nobody.{i:04d}&password=wrong-{i:04d}-guess\n"
        for i in range(2000)
    ))  # fmt: skip
    poisoned = workdir / "flood-poisoned.jsonl"
    record = {"type": "detainee_case", "id": "GRN-2026-00001", "facility": "greene"}
    body = {"actor": "clerk.grn00\u0000", "action": "read_case", "purpose": "records_request",
            "record": record}  # fmt: skip
    poisoned.write_text(json.dumps(body) + "\n")
    return {
        "logins": ("/v1/auth/token", logins, "application/x-www-form-urlencoded"),
        "poisoned": ("/v1/decisions", poisoned, "application/json"),
    }


def start_flood(
    wrk: str, base: str, path: str, bodies: Path, content_type: str, token: str | None,
    connections: int, seconds: int,
) -> subprocess.Popen[str]:  # fmt: skip
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
               str(LUA), base + path, "--", str(bodies), token or "-", "0",
               content_type]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def flood_statuses(process: subprocess.Popen[str]) -> dict[str, int]:
    out, err = process.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise RuntimeError(f"flood wrk failed ({process.returncode}):\n{out}\n{err}")
    report = json.loads(lines[-1][len(MARKER) :])
    return {k: int(v) for k, v in report["statuses"].items()}


def login_events(base: str, token: str) -> int:
    """How many `login` events the log holds (paged over the API, as oversight would)."""
    count, cursor = 0, None
    with httpx.Client(base_url=base, timeout=60,
                      headers={"authorization": f"Bearer {token}"}) as http:  # fmt: skip
        while True:
            params: dict[str, Any] = {"kind": "login", "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/v1/events", params=params)
            page.raise_for_status()
            body = page.json()
            count += len(body["items"])
            cursor = body.get("next_cursor")
            if not cursor:
                return count


def oversight_token(service_env: dict[str, str], base: str, workdir: Path) -> str:
    """An oversight officer made by the command line, and its token."""
    username, password = "bench.oversight", "bench-oversight-password-1"
    subprocess.run(
        [*cli_command(), "users", "add", username, "--role", "oversight", "--password", "-"],
        input=password + "\n", env=service_env, cwd=workdir, capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip
    form = {"grant_type": "password", "username": username, "password": password}
    response = httpx.post(f"{base}/v1/auth/token", data=form, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


def failed(run: Run) -> int:
    return run.requests - run.ok + run.socket_errors


def merged(runs: list[Run]) -> dict[str, Any]:
    histogram: Counter[int] = Counter()
    for run in runs:
        histogram.update(run.histogram)
    return {
        "requests": sum(run.requests for run in runs),
        "failed": sum(failed(run) for run in runs),
        "p50_ms": histogram_percentile(dict(histogram), 50),
        "p99_ms": histogram_percentile(dict(histogram), 99),
        "requests_per_s": [run.rate for run in runs],
        "statuses": dict(sum((Counter(run.statuses) for run in runs), Counter())),
    }


def bench_database(kind: str, wrk: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aa-bench-isolation-") as tmp:
        workdir = Path(tmp)
        policy_dir, _ = policy_for_today(workdir, POLICY_DIR, amend=True)
        workers = args.workers if kind == "postgresql" else 1
        with (
            database(kind, workdir) as url,
            bootstrapped_service(url, policy_dir, workdir, roster(), workers=workers) as service,
        ):
            print(f"[{kind}] {service.bootstrap_line()} ({workers} workers)", file=sys.stderr)
            base = service.running.base
            observer = oversight_token(service.env, base, workdir)
            logins_before = login_events(base, observer)
            token, bodies = Token(service), Bodies(workdir, seed=11)
            floods = flood_files(workdir)
            quiet: list[Run] = []
            flooded: list[Run] = []
            got: dict[str, Counter[str]] = {name: Counter() for name in floods}
            n = args.seconds * 2000
            for number in range(1, args.rounds + 1):
                ran = drive(wrk, service.running, args.connections, args.seconds,
                            bodies.file(n), token.get(), None)  # fmt: skip
                quiet.append(ran)
                started = {
                    name: start_flood(wrk, base, path, file, content_type,
                                      None if name == "logins" else token.get(),
                                      args.flood_connections, args.seconds + 2)
                    for name, (path, file, content_type) in floods.items()
                }  # fmt: skip
                under = drive(wrk, service.running, args.connections, args.seconds,
                              bodies.file(n), token.get(), None)  # fmt: skip
                flooded.append(under)
                for name, process in started.items():
                    got[name].update(flood_statuses(process))
                print(
                    f"  round {number}: quiet p99 {ran.p99_ms:.1f} ms ({failed(ran)} failed), "
                    f"flooded p99 {under.p99_ms:.1f} ms ({failed(under)} failed); floods "
                    + ", ".join(f"{name} {dict(got[name])}" for name in floods),
                    file=sys.stderr,
                )
            logins_after = login_events(base, observer)
    calm, loud = merged(quiet), merged(flooded)
    ratio = loud["p99_ms"] / calm["p99_ms"] if calm["p99_ms"] else float("inf")
    flood_logins = sum(got["logins"].values())
    return {
        "database": kind,
        "workers": workers,
        "quiet": calm,
        "flooded": loud,
        "p99_ratio": ratio,
        "floods": {name: dict(counts) for name, counts in got.items()},
        "login_attempts_flooded": flood_logins,
        "login_events_appended": logins_after - logins_before,
        "meets": {"p99": ratio <= TARGET_P99_RATIO, "no_failures": loud["failed"] == 0},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=4, help="ordinary decisions")
    parser.add_argument("--flood-connections", type=int, default=8, help="each flood")
    parser.add_argument("--workers", type=int, default=4, help="server workers on PostgreSQL")
    args = parser.parse_args()
    wrk = ensure_wrk()
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [bench_database(kind, wrk, args) for kind in kinds]
    table = Table(["database", "workers", "quiet p50 ms", "quiet p99 ms", "flooded p50 ms",
                   "flooded p99 ms", "p99 ratio", "failed", "logins flooded", "login events",
                   "p99<=2x", "no failures"])  # fmt: skip
    for r in results:
        table.add(
            r["database"], r["workers"], f"{r['quiet']['p50_ms']:.1f}",
            f"{r['quiet']['p99_ms']:.1f}", f"{r['flooded']['p50_ms']:.1f}",
            f"{r['flooded']['p99_ms']:.1f}", f"{r['p99_ratio']:.2f}", r["flooded"]["failed"],
            r["login_attempts_flooded"], r["login_events_appended"],
            "yes" if r["meets"]["p99"] else "NO", "yes" if r["meets"]["no_failures"] else "NO",
        )  # fmt: skip
    print(table.render())
    for r in results:
        print(f"{r['database']}: floods answered {r['floods']}")
    print(f"target: flooded p99 <= {TARGET_P99_RATIO}x quiet p99, zero failed ordinary decisions")
    path = write_results("isolation", {
        "benchmark": "isolation", "machine": machine(), "host": HOST, "rounds": args.rounds,
        "seconds": args.seconds, "connections": args.connections,
        "flood_connections": args.flood_connections, "results": results,
    })  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
