"""Ingest throughput: POST /v1/events on the real server against the raw driver's insert.

For each database (a fresh SQLite file; a fresh PostgreSQL database, dropped afterwards):
migrate, bootstrap an admin with `access-audit users add`, start `access-audit serve` (one
worker), create the actors and an integration client over its HTTP API. Then, in rounds:

1. the service ingests its share of N reported events (1,000 a batch, in order, over one
   keep-alive connection), and
2. the ceiling: the raw driver reads back the very rows that round stored in `events`
   (exactly as stored: no conversion) and inserts them into `events_raw`, a bare copy of
   `events` (same columns, same indexes and unique constraints, no triggers: built by
   reflecting the migrated table, and checked), 1,000 rows a commit as the service commits:
   on SQLite `sqlite3`'s executemany on a connection of its own (WAL, synchronous=NORMAL, as
   the service connects), on PostgreSQL psycopg's COPY FROM STDIN (`write_row`).

The rounds alternate the two, so that a drift of the machine's speed weighs on both alike,
and the ratio is the median of the rounds' ratios. The ceiling inserts into `events` only:
whatever else the service stores per event (derived tables) is part of what it costs.
Reported beside the rates: the batch latency (p50/p95), the server's CPU per event (its
process's /proc/<pid>/stat; on PostgreSQL also its database backends') and the ceiling's
CPU per row (this process, and on PostgreSQL its backend). Target: ingest events/s >= 0.5 x
the ceiling's rows/s, on both databases.

The benchmark talks to the service over HTTP and its command line only; the tables are
read and written with the database drivers themselves (sqlite3, psycopg).

    .venv/bin/python bench/ingest.py [--events 100000] [--rounds 5]
                                     [--database sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx
from harness import (
    PG_SERVER,
    POLICY_DIR,
    RequestMix,
    Table,
    backend_cpu,
    backend_cpu_spent,
    bootstrapped_service,
    database,
    driver_dsn,
    machine,
    median,
    percentile,
    policy_for_today,
    process_cpu_seconds,
    roster,
    write_results,
)
from sqlalchemy.engine import make_url

TARGET = 0.5
BATCH = 1000
SOURCE, RAW = "events", "events_raw"
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


def split(items: Sequence[bytes], parts: int) -> list[Sequence[bytes]]:
    """`items` in `parts` consecutive runs of nearly equal length."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


# --- the ceiling: the raw driver ----------------------------------------------------------


class Ceiling(Protocol):
    """The raw driver on a table of its own: what the database takes at best."""

    columns: list[str]  # of events, in the order of the rows read and written

    def create_table(self) -> dict[str, Any]: ...
    def last_seq(self) -> int: ...
    def stored_since(self, seq: int) -> list[tuple[Any, ...]]: ...
    def insert(self, rows: list[tuple[Any, ...]]) -> None: ...
    def count(self) -> int: ...
    def cpu_seconds(self) -> float | None: ...
    def close(self) -> None: ...


def _raw_name(name: str) -> str:
    """events -> events_raw in a constraint or index name (pk_events, ix_events_record)."""
    renamed = re.sub(r"(?<![A-Za-z0-9])events(?=_|$)", RAW, name, count=1)
    return renamed if renamed != name else f"{name}_raw"


class SqliteCeiling:
    """sqlite3 on its own connection, configured as the service configures its own."""

    def __init__(self, database_url: str) -> None:
        path = make_url(database_url).database
        assert path
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.columns: list[str] = []
        self.sql = ""

    def create_table(self) -> dict[str, Any]:
        """CREATE TABLE and CREATE INDEX of `events` from sqlite_master, renamed (the unique
        constraints come with the table; triggers are left out)."""
        schema = self.conn.execute(
            "SELECT type, name, sql FROM sqlite_master"
            " WHERE tbl_name = ? AND type IN ('table', 'index') AND sql IS NOT NULL"
            " ORDER BY type = 'index', rowid",
            (SOURCE,),
        ).fetchall()
        self.conn.execute("BEGIN IMMEDIATE")
        for kind, name, sql in schema:
            sql = re.sub(r"\b(pk|uq|ck|fk|ix)_events(?=_|\b)", rf"\1_{RAW}", sql)
            if kind == "table":
                sql = re.sub(rf'^(CREATE TABLE\s+)"?{SOURCE}"?', rf"\1{RAW}", sql)
            else:
                new = _raw_name(name)
                sql = re.sub(
                    rf'^(CREATE (?:UNIQUE )?INDEX\s+)"?{re.escape(name)}"?', rf"\1{new}", sql
                )
                sql = re.sub(rf'\bON\s+"?{SOURCE}"?(\s*\()', rf"ON {RAW}\1", sql)
            self.conn.execute(sql)
        self.conn.execute("COMMIT")
        source, raw = self._indexes(SOURCE), self._indexes(RAW)
        triggers = self.conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (RAW,)
        ).fetchone()[0]
        columns = [tuple(r[1:]) for r in self.conn.execute(f"PRAGMA table_xinfo({SOURCE})")]
        if (
            source != raw
            or triggers
            or columns != [tuple(r[1:]) for r in self.conn.execute(f"PRAGMA table_xinfo({RAW})")]
        ):
            raise RuntimeError(f"{RAW} is not a bare copy of {SOURCE}: {source} != {raw}")
        self.columns = [str(c[0]) for c in columns]
        marks = ", ".join("?" * len(self.columns))
        self.sql = f"INSERT INTO {RAW} ({', '.join(self.columns)}) VALUES ({marks})"
        return {"indexes": len(raw), "index_definitions": [str(i) for i in raw], "triggers": 0}

    def _indexes(self, table: str) -> list[tuple[Any, ...]]:
        """Every index of `table` by what it does: unique, origin (pk/u/c), columns, WHERE."""
        found = []
        for _, name, unique, origin, partial in self.conn.execute(f"PRAGMA index_list({table})"):
            keys = tuple(
                (r[2], r[3], r[4])
                for r in self.conn.execute(f'PRAGMA index_xinfo("{name}")')
                if r[5]  # key columns only
            )
            sql = self.conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
            ).fetchone()
            where = re.split(r"\bWHERE\b", sql[0], maxsplit=1)[1].strip() if partial else None
            found.append((bool(unique), origin, keys, where))
        return sorted(found, key=repr)

    def last_seq(self) -> int:
        return int(self.conn.execute(f"SELECT coalesce(max(seq), 0) FROM {SOURCE}").fetchone()[0])

    def stored_since(self, seq: int) -> list[tuple[Any, ...]]:
        cols = ", ".join(self.columns)
        query = f"SELECT {cols} FROM {SOURCE} WHERE seq > ? ORDER BY seq"
        return self.conn.execute(query, (seq,)).fetchall()

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(self.sql, rows)
        self.conn.execute("COMMIT")

    def count(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {RAW}").fetchone()[0])

    def cpu_seconds(self) -> float | None:
        return time.process_time()  # sqlite3 runs in this process

    def close(self) -> None:
        self.conn.close()


class PostgresCeiling:
    """psycopg 3 on its own connection: COPY ... FROM STDIN, rows written with write_row."""

    def __init__(self, database_url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(driver_dsn(database_url))
        self.backend = int(self.conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        self.conn.commit()
        self.columns: list[str] = []

    def create_table(self) -> dict[str, Any]:
        """CREATE TABLE events_raw (LIKE events INCLUDING ALL): columns, defaults, checks,
        the primary key, unique constraints and every index; never triggers."""
        with self.conn.transaction():
            self.conn.execute(f"CREATE TABLE {RAW} (LIKE {SOURCE} INCLUDING ALL)")
        source, raw = self._indexes(SOURCE), self._indexes(RAW)
        constraints = [self._constraints(t) for t in (SOURCE, RAW)]
        triggers = self.conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (RAW,),
        ).fetchone()[0]
        columns = [self._columns(t) for t in (SOURCE, RAW)]
        self.conn.commit()
        if (
            source != raw
            or constraints[0] != constraints[1]
            or triggers
            or columns[0] != columns[1]
        ):
            raise RuntimeError(f"{RAW} is not a bare copy of {SOURCE}: {source} != {raw}")
        self.columns = [c[0] for c in columns[0]]
        return {"indexes": len(raw), "index_definitions": raw, "triggers": int(triggers)}

    def _indexes(self, table: str) -> list[str]:
        """Every index definition of `table`, its own name and the table's taken out."""
        rows = self.conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = %s",
            (table,),
        ).fetchall()
        return sorted(
            re.sub(rf"\bON (\w+\.)?{table}\b", "ON T", def_.replace(name, "I", 1))
            for name, def_ in rows
        )

    def _constraints(self, table: str) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT contype::text, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass",
            (table,),
        ).fetchall()
        return sorted((str(t), str(d)) for t, d in rows)

    def _columns(self, table: str) -> list[tuple[str, str, str]]:
        rows = self.conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def last_seq(self) -> int:
        seq = self.conn.execute(f"SELECT coalesce(max(seq), 0) FROM {SOURCE}").fetchone()[0]
        self.conn.commit()
        return int(seq)

    def stored_since(self, seq: int) -> list[tuple[Any, ...]]:
        """The rows in PostgreSQL's own text form (COPY TO without types): as stored."""
        cols = ", ".join(self.columns)
        query = f"COPY (SELECT {cols} FROM {SOURCE} WHERE seq > {int(seq)} ORDER BY seq) TO STDOUT"
        with self.conn.cursor() as cur, cur.copy(query) as copy:
            rows = list(copy.rows())
        self.conn.commit()
        return rows

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        query = f"COPY {RAW} ({', '.join(self.columns)}) FROM STDIN"
        with self.conn.cursor() as cur, cur.copy(query) as copy:
            for row in rows:
                copy.write_row(row)
        self.conn.commit()

    def count(self) -> int:
        n = self.conn.execute(f"SELECT count(*) FROM {RAW}").fetchone()[0]
        self.conn.commit()
        return int(n)

    def cpu_seconds(self) -> float | None:
        backend = process_cpu_seconds(self.backend)
        return None if backend is None else time.process_time() + backend

    def close(self) -> None:
        self.conn.close()


def ceiling_for(database_url: str) -> Ceiling:
    if database_url.startswith("sqlite"):
        return SqliteCeiling(database_url)
    return PostgresCeiling(database_url)


def raw_insert(ceiling: Ceiling, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Insert `rows` into events_raw, BATCH a commit; the time and CPU it took."""
    cpu = ceiling.cpu_seconds()
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        ceiling.insert(rows[start : start + BATCH])
    elapsed = time.perf_counter() - started
    after = ceiling.cpu_seconds()
    return {
        "rows": len(rows),
        "seconds": elapsed,
        "rows_per_s": len(rows) / elapsed if elapsed else 0.0,
        "cpu_s": None if cpu is None or after is None else after - cpu,
    }


# --- the service ---------------------------------------------------------------------------


def ingest(http: httpx.Client, bodies: Sequence[bytes]) -> dict[str, Any]:
    """Post every batch in order on the one keep-alive connection of `http`."""
    latencies: list[float] = []
    answers: list[bytes] = []
    started = time.perf_counter()
    for body in bodies:
        sent = time.perf_counter()
        response = http.post("/v1/events", content=body)
        latencies.append(time.perf_counter() - sent)
        if response.status_code != 200:
            raise RuntimeError(f"POST /v1/events -> {response.status_code}: {response.text}")
        answers.append(response.content)
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
        "events_per_s": events / elapsed if elapsed else 0.0,
        "latencies": latencies,
        "decisions": decisions,
        "flags": flags,
    }


def per(seconds: float | None, count: int) -> float | None:
    """Microseconds per item (None where not measured)."""
    return None if seconds is None or not count else seconds * 1e6 / count


def bench_database(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    events = reported_events(args.events, args.seed)
    bodies = [
        json.dumps({"events": events[i : i + BATCH]}).encode() for i in range(0, len(events), BATCH)
    ]
    rounds: list[dict[str, Any]] = []
    latencies: list[float] = []
    decisions: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="aa-bench-ingest-") as tmp:
        workdir = Path(tmp)
        policy_dir, extended = policy_for_today(workdir, args.policy_dir, not args.shipped_policy)
        with (
            database(kind, workdir, args.pg_server) as url,
            bootstrapped_service(url, policy_dir, workdir, roster()) as service,
        ):
            print(f"[{kind}] {service.bootstrap_line()}", file=sys.stderr)
            ceiling = ceiling_for(url)
            headers = {
                "Authorization": f"Bearer {service.token}",
                "Content-Type": "application/json",
            }
            try:
                table = ceiling.create_table()
                with httpx.Client(
                    base_url=service.running.base, headers=headers, timeout=300
                ) as http:
                    for number, share in enumerate(split(bodies, args.rounds), start=1):
                        last = ceiling.last_seq()
                        db_before = backend_cpu(url)
                        cpu = service.running.cpu_seconds()
                        posted = ingest(http, share)
                        after = service.running.cpu_seconds()
                        db_spent = backend_cpu_spent(db_before, backend_cpu(url))
                        rows = ceiling.stored_since(last)
                        at = ceiling.columns.index("kind")
                        kinds.update(str(row[at]) for row in rows)
                        raw = raw_insert(ceiling, rows)
                        latencies += posted.pop("latencies")
                        decisions.update(posted.pop("decisions"))
                        flags.update(posted.pop("flags"))
                        posted["server_cpu_s"] = (
                            None if cpu is None or after is None else after - cpu
                        )
                        posted["db_cpu_s"] = db_spent
                        ratio = posted["events_per_s"] / raw["rows_per_s"]
                        rounds.append({"service": posted, "raw": raw, "ratio": ratio})
                        print(
                            f"  round {number}: service {posted['events_per_s']:,.0f} events/s, "
                            f"raw {raw['rows_per_s']:,.0f} rows/s ({raw['rows']:,} rows), "
                            f"ratio {ratio:.3f}",
                            file=sys.stderr,
                        )
                stored = ceiling.count()
            finally:
                ceiling.close()
            bootstrap = service.bootstrap_facts()
    expected = sum(r["raw"]["rows"] for r in rounds)
    if stored != expected:
        raise RuntimeError(f"{RAW} holds {stored} rows, expected {expected}")
    ingested = sum(r["service"]["events"] for r in rounds)
    if kinds.get("report", 0) != ingested:
        raise RuntimeError(f"{ingested} events ingested but {kinds} rows stored in {SOURCE}")

    def total(part: str, key: str) -> float | None:
        values = [r[part][key] for r in rounds]
        return None if None in values else sum(values)

    ratio = median([r["ratio"] for r in rounds])
    return {
        "database": kind,
        "bootstrap": bootstrap,
        "events": ingested,
        "rounds": rounds,
        "service": {
            "events_per_s": median([r["service"]["events_per_s"] for r in rounds]),
            "batch_ms_p50": median(latencies) * 1000,
            "batch_ms_p95": percentile(latencies, 95) * 1000,
            "server_cpu_us_per_event": per(total("service", "server_cpu_s"), ingested),
            "db_cpu_us_per_event": per(total("service", "db_cpu_s"), ingested),
            "decisions": dict(decisions),
            "flags": dict(flags),
        },
        "raw": {
            "driver": "sqlite3 executemany" if kind == "sqlite" else "psycopg COPY write_row",
            "rows": expected,
            "rows_per_s": median([r["raw"]["rows_per_s"] for r in rounds]),
            "cpu_us_per_row": per(total("raw", "cpu_s"), expected),
            "stored_kinds": dict(kinds),
            "table": table,
        },
        "ratio": ratio,
        "ratio_by_round": [r["ratio"] for r in rounds],
        "target": TARGET,
        "meets_target": ratio >= TARGET,
        "policy_window_extended_to": extended,
    }


def us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternate the service and the raw insert"
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-server", default=PG_SERVER, help="where to CREATE DATABASE")
    parser.add_argument("--policy-dir", type=Path, default=POLICY_DIR)
    parser.add_argument(
        "--shipped-policy",
        action="store_true",
        help="serve the policy as shipped even when today is past its window",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not 1 <= args.events <= 1_000_000:
        parser.error("--events must be between 1 and 1,000,000")
    if not 1 <= args.rounds <= -(-args.events // BATCH):
        parser.error("--rounds must be 1 to the number of batches")
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [bench_database(kind, args) for kind in kinds]

    table = Table(
        [
            "database",
            "events",
            "ingest ev/s",
            "raw rows/s",
            "ratio",
            "met",
            "batch p50 ms",
            "batch p95 ms",
            "server µs/ev",
            "db µs/ev",
            "raw µs/row",
        ]
    )
    for r in results:
        service, raw = r["service"], r["raw"]
        table.add(
            r["database"],
            r["events"],
            service["events_per_s"],
            raw["rows_per_s"],
            f"{r['ratio']:.3f}",
            "yes" if r["meets_target"] else "NO",
            service["batch_ms_p50"],
            service["batch_ms_p95"],
            us(service["server_cpu_us_per_event"]),
            us(service["db_cpu_us_per_event"]),
            us(raw["cpu_us_per_row"]),
        )
    print(table.render())
    print(
        f"target: ingest events/s >= {TARGET} x the raw driver's rows/s into a bare copy of "
        f"events (ratio: median of {args.rounds} rounds alternating the two; batches of "
        f"{BATCH}); server µs/ev: the server process's CPU, db µs/ev: its PostgreSQL "
        "backends'; raw µs/row: this process's CPU and, on PostgreSQL, its backend's"
    )
    for r in results:
        print(f"{r['database']}: raw insert by {r['raw']['driver']} into {RAW} "
              f"({r['raw']['table']['indexes']} indexes, as {SOURCE})")  # fmt: skip
        print(f"{r['database']}: decisions {r['service']['decisions']}, "
              f"flags {r['service']['flags']}")  # fmt: skip
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
            "rounds": args.rounds,
            "batch": BATCH,
            "machine": machine(),
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
