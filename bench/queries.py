"""Oversight query latency at mission scale: a year of the log (1,000,000 events by default),
bulk-loaded into a fresh database, then the reads oversight makes most, timed.

For each database: load the log (bench/mission_log.py: judged by the real policy, chained
with the real hash, Core executemany on SQLite, COPY on PostgreSQL), then time, through
the same service functions the API handlers call (query + building the response body,
serialised to JSON; no HTTP):

* a record's accesses (the accounting of disclosures, first page);
* one actor's events in one month (every one, limit 1000);
* a filtered page deep in the log (`facility` + `decision=deny`, cursor near the end);
* the summary grouped by facility and day over the whole mission;
* the denials report over the whole mission;
* and, for information, the summary by role and decision and the newest open flags.

Targets (issue 5): p95 < 50 ms for the record, actor and page reads; < 1 s for the
whole-mission reports.

    .venv/bin/python bench/queries.py [--events 1000000] [--database sqlite|postgresql|both]
                                      [--database-url URL] [--repeat 40]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from typing import Any

from harness import (
    PG_SERVER,
    POLICY_DIR,
    Table,
    machine,
    median,
    percentile,
    write_results,
)
from mission_log import LoadedLog, prepared_log
from sqlalchemy.engine import make_url

FAST_MS = 50.0
REPORT_MS = 1000.0
FACILITIES = ("greene", "phelps", "ste_genevieve")


def _cases(
    context: Any, loaded: LoadedLog
) -> list[tuple[str, float, Callable[[random.Random], Any]]]:
    """(name, target in ms, one call) for every timed read."""
    from app.reports.schemas import (
        AccessQuery,
        DenialsQuery,
        EventQuery,
        FlagsQuery,
        SummaryQuery,
    )

    months = [date(2025 + (9 + m) // 12, (9 + m) % 12 + 1, 1) for m in range(12)]

    def record(rng: random.Random) -> Any:
        record_type, record_id = rng.choice(loaded.records)
        with context.database.reader() as session:
            return context.reports.record_accesses(
                session, record_type, record_id, AccessQuery()
            ).model_dump_json()

    def actor_month(rng: random.Random) -> Any:
        i = rng.randrange(11)
        query = EventQuery(actor=rng.choice(loaded.actors), since=months[i],
                           until=months[i + 1], limit=1000)  # fmt: skip
        with context.database.reader() as session:
            page = context.reports.list_events(session, query)
            return page.model_dump_json()

    def deep_page(rng: random.Random) -> Any:
        query = EventQuery(facility=rng.choice(FACILITIES), decision="deny")
        after = int(loaded.events * rng.uniform(0.80, 0.97))
        cursor = context.cursors.encode("events", query.model_dump(mode="json"), after)
        with context.database.reader() as session:
            page = context.reports.list_events(session, query.model_copy(update={"cursor": cursor}))
            return page.model_dump_json()

    def summary(group_by: list[str]) -> Callable[[random.Random], Any]:
        def run(_: random.Random) -> Any:
            with context.database.reader() as session:
                query = SummaryQuery(group_by=group_by)  # type: ignore[arg-type]
                return context.reports.summary_report(session, query).model_dump_json()

        return run

    def denials(_: random.Random) -> Any:
        with context.database.reader() as session:
            return context.reports.denials_report(session, DenialsQuery()).model_dump_json()

    def open_flags(_: random.Random) -> Any:
        with context.database.reader() as session:
            query = FlagsQuery(status="open", newest_first=True, limit=20)
            return context.reports.flags_report(session, query).model_dump_json()

    return [
        ("record accesses", FAST_MS, record),
        ("actor, one month", FAST_MS, actor_month),
        ("deep filtered page", FAST_MS, deep_page),
        ("summary facility x day", REPORT_MS, summary(["facility", "day"])),
        ("denials report", REPORT_MS, denials),
        ("summary role x decision", REPORT_MS, summary(["role", "decision"])),
        ("open flags, newest 20", REPORT_MS, open_flags),
    ]


def _time(call: Callable[[random.Random], Any], repeat: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    for _ in range(2):  # warm the caches and the connection pool
        call(rng)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call(rng)
        times.append((time.perf_counter() - started) * 1000)
    return times


def bench_database(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from app.config import Settings
    from app.context import build_context

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aa-bench-q-")))
        key_file = (args.key_dir or workdir) / "signing.pem"
        url, loaded = prepared_log(stack, kind, workdir, key_file, args)
        settings = Settings(database_url=url, policy_dir=POLICY_DIR, signing_key_file=key_file,
                            secret_key=secrets.token_urlsafe(48))  # fmt: skip
        context = build_context(settings)
        gc.freeze()  # as `access-audit serve` does once started (app/main.py)
        try:
            cases = []
            for name, target, call in _cases(context, loaded):
                repeat = args.repeat if target == FAST_MS else max(5, args.repeat // 4)
                times = _time(call, repeat, args.seed)
                p95 = percentile(times, 95)
                cases.append({"query": name, "runs": repeat, "p50_ms": median(times),
                              "p95_ms": p95, "max_ms": max(times), "target_ms": target,
                              "meets_target": p95 < target})  # fmt: skip
                print(f"[{kind}] {name}: p50 {median(times):.1f} ms, p95 {p95:.1f} ms",
                      file=sys.stderr)  # fmt: skip
        finally:
            context.dispose()
    return {"database": kind, "events": loaded.events, "load_seconds": loaded.seconds,
            "cases": cases}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--database-url", help="use (and fill if empty) this database instead")
    parser.add_argument("--pg-server", default=PG_SERVER, help="where to CREATE DATABASE")
    parser.add_argument("--key-dir", type=Path, help="keep the signing key here")
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.database_url:
        backend = make_url(args.database_url).get_backend_name()
        kinds = ["sqlite" if backend == "sqlite" else "postgresql"]
    else:
        kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    load_before = os.getloadavg()
    results = [bench_database(kind, args) for kind in kinds]
    # The machine may be shared: the load average says how much else was running.
    load = {"before": load_before, "after": os.getloadavg()}

    table = Table(["database", "events", "query", "p50 ms", "p95 ms", "target ms", "met"])
    for r in results:
        for case in r["cases"]:
            table.add(r["database"], r["events"], case["query"], case["p50_ms"],
                      case["p95_ms"], f"< {case['target_ms']:.0f}",
                      "yes" if case["meets_target"] else "NO")  # fmt: skip
    print(table.render())
    path = write_results("queries", {"benchmark": "queries", "machine": machine(),
                                     "load_average": load, "results": results})  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
