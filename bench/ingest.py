"""Ingest throughput: POST /v1/events on the real server against a raw bulk insert.

For each database (a fresh SQLite file; a fresh PostgreSQL database, dropped afterwards):
migrate, create the actors and an integration client, start `access-audit serve` (one
worker), post N reported events in batches of 1,000 over one keep-alive connection, then
insert the very rows the service stored into a bare copy of `events` (same columns, same
indexes and unique constraints) with a Core executemany, 1,000 rows per transaction as the
service commits. Target (issue 3): ingest events/s >= 0.25 x the raw insert rate.

    .venv/bin/python bench/ingest.py [--events 100000] [--database sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from harness import (
    PG_SERVER,
    POLICY_DIR,
    RequestMix,
    Table,
    app_server_command,
    bootstrap,
    client_token,
    cpu_per,
    database,
    free_port,
    machine,
    median,
    percentile,
    policy_for_today,
    roster,
    server,
    server_env,
    write_results,
)
from sqlalchemy import MetaData, func, insert, inspect, select
from sqlalchemy import Table as SqlTable
from sqlalchemy.schema import conv

TARGET = 0.25
BATCH = 1000
LOCAL = ZoneInfo("America/Chicago")


def reported_events(n: int, seed: int) -> list[dict[str, Any]]:
    """N reports spread over the last 23 hours in arrival order (as a client would send
    them, a few seconds out of order), each with its own client_event_id."""
    mix = RequestMix(roster(), seed=seed)
    run = secrets.token_hex(3)
    end = datetime.now(UTC) - timedelta(minutes=2)
    start = end - timedelta(hours=23)
    step = (end - start) / max(n, 1)
    events = []
    for i in range(n):
        _, body = mix.next()
        jitter = timedelta(seconds=mix.rng.uniform(-20, 0))
        occurred = max(start, start + step * i + jitter).astimezone(LOCAL)
        body["occurred_at"] = occurred.isoformat()
        body["client_event_id"] = f"cms-{run}-{i:07d}"
        events.append(body)
    return events


def raw_table(metadata: MetaData) -> SqlTable:
    """A bare copy of `events`: same columns, indexes and unique constraints, no triggers."""
    from app.ledger.models import Event

    raw = Event.__table__.to_metadata(metadata, name="events_raw")
    for item in [*raw.indexes, *raw.constraints]:
        if isinstance(item.name, str):  # names are global on PostgreSQL: make them its own
            item.name = conv(re.sub(r"^(pk|uq|ix)_events", r"\1_events_raw", item.name))
    return raw


def index_count(engine: Any, table: str) -> int:
    inspector = inspect(engine)
    return len(inspector.get_indexes(table)) + len(inspector.get_unique_constraints(table))


def run_ingest(base: str, token: str, bodies: list[bytes], max_seconds: float) -> dict[str, Any]:
    """Post every batch in order over one keep-alive connection; returns timings and counts."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    answers: list[bytes] = []
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        started = time.perf_counter()
        for body in bodies:
            sent = time.perf_counter()
            response = client.post("/v1/events", content=body)
            latencies.append(time.perf_counter() - sent)
            if response.status_code != 200:
                raise RuntimeError(f"POST /v1/events -> {response.status_code}: {response.text}")
            answers.append(response.content)
            if sent - started > max_seconds:
                break
        elapsed = time.perf_counter() - started
    decisions: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    events = 0
    for answer in answers:
        for result in json.loads(answer)["results"]:
            events += 1
            decisions[result["decision"]] += 1
            flags.update(result["flags"])
            if result["duplicate"]:
                raise RuntimeError("a fresh event came back as a duplicate")
    return {
        "events": events,
        "batches": len(answers),
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "batch_ms_p50": median(latencies) * 1000,
        "batch_ms_p95": percentile(latencies, 95) * 1000,
        "decisions": dict(decisions),
        "flags": dict(flags),
    }


def run_raw_insert(database_url: str, max_seconds: float) -> dict[str, Any]:
    """Insert the rows the service stored into `events_raw`, 1,000 per transaction."""
    from app.db import make_engine
    from app.ledger.models import Event

    engine = make_engine(database_url)
    try:
        raw = raw_table(MetaData(naming_convention=Event.metadata.naming_convention))
        raw.create(engine)
        same = index_count(engine, "events_raw") == index_count(engine, "events")
        if not same:
            raise RuntimeError("events_raw does not carry the same indexes as events")
        with engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    select(Event.__table__).where(Event.kind == "report").order_by(Event.seq)
                )
            ]
        started = time.perf_counter()
        done = 0
        for start in range(0, len(rows), BATCH):
            with engine.begin() as conn:
                conn.execute(insert(raw), rows[start : start + BATCH])
            done += len(rows[start : start + BATCH])
            if time.perf_counter() - started > max_seconds:
                break
        elapsed = time.perf_counter() - started
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(raw))
        if stored != done:
            raise RuntimeError(f"events_raw holds {stored} rows, expected {done}")
        return {"rows": done, "seconds": elapsed, "rows_per_s": done / elapsed}
    finally:
        engine.dispose()


def bench_database(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aa-bench-ingest-") as tmp:
        workdir = Path(tmp)
        policy_dir, extended = policy_for_today(workdir, args.policy_dir, not args.shipped_policy)
        key_file = workdir / "signing.pem"
        events = reported_events(args.events, args.seed)
        bodies = [
            json.dumps({"events": events[i : i + BATCH]}).encode()
            for i in range(0, len(events), BATCH)
        ]
        with database(kind, workdir, args.pg_server) as url:
            started = time.perf_counter()
            client_id, secret = bootstrap(url, policy_dir, key_file, roster())
            print(f"[{kind}] bootstrap: {time.perf_counter() - started:.1f} s", file=sys.stderr)
            port = free_port()
            env = server_env(url, policy_dir, key_file)
            log = workdir / "server.log"
            with server(app_server_command(port), env, port, log, workdir) as running:
                token = client_token(running.base, client_id, secret)
                cpu_before = running.cpu_seconds()
                ingest = run_ingest(running.base, token, bodies, args.max_seconds)
                ingest["server_cpu_ms_per_batch"] = cpu_per(running, cpu_before, ingest["batches"])
            print(f"[{kind}] ingest: {ingest['events_per_s']:,.0f} events/s", file=sys.stderr)
            raw = run_raw_insert(url, args.max_seconds)
            print(f"[{kind}] raw insert: {raw['rows_per_s']:,.0f} rows/s", file=sys.stderr)
    ratio = ingest["events_per_s"] / raw["rows_per_s"]
    return {
        "database": kind,
        "ingest": ingest,
        "raw_insert": raw,
        "ratio": ratio,
        "target": TARGET,
        "meets_target": ratio >= TARGET,
        "policy_window_extended_to": extended,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-server", default=PG_SERVER, help="where to CREATE DATABASE")
    parser.add_argument("--policy-dir", type=Path, default=POLICY_DIR)
    parser.add_argument(
        "--shipped-policy",
        action="store_true",
        help="serve the policy as shipped even when today is past its window",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=900,
        help="stop posting (and inserting) after this long",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not 1 <= args.events <= 1_000_000:
        parser.error("--events must be between 1 and 1,000,000")
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [bench_database(kind, args) for kind in kinds]

    table = Table(
        [
            "database",
            "events",
            "ingest ev/s",
            "batch p50 ms",
            "batch p95 ms",
            "raw rows/s",
            "ratio",
            "target",
            "met",
        ]
    )
    for r in results:
        ingest, raw = r["ingest"], r["raw_insert"]
        table.add(
            r["database"],
            ingest["events"],
            ingest["events_per_s"],
            ingest["batch_ms_p50"],
            ingest["batch_ms_p95"],
            raw["rows_per_s"],
            f"{r['ratio']:.3f}",
            f">= {TARGET}",
            "yes" if r["meets_target"] else "NO",
        )
    print(table.render())
    for r in results:
        ingest = r["ingest"]
        print(f"{r['database']}: decisions {ingest['decisions']}, flags {ingest['flags']}")
        if r["policy_window_extended_to"]:
            print(
                f"{r['database']}: served a copy of the policy with window_end "
                f"{r['policy_window_extended_to']} (today is past the shipped window)"
            )
    path = write_results(
        "ingest",
        {
            "benchmark": "ingest",
            "events": args.events,
            "batch": BATCH,
            "machine": machine(),
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
