"""Export throughput: the full events CSV streamed over HTTP by the real server, against the
database's own bulk CSV dump of the same rows.

For each database: bulk-load the log (bench/mission_log.py, 1,000,000 events by default),
create an auditor, start `access-audit serve` (uvicorn, one worker), let it settle, then
stream `GET /v1/exports/events.csv` to the end while sampling the server's resident memory
(RSS, every 20 ms), check the body against the signed manifest, and in the same run time
the ceiling: `COPY (SELECT * FROM events ORDER BY seq) TO STDOUT WITH CSV` on PostgreSQL,
a `sqlite3` cursor into `csv.writer` on SQLite, read by this process.

Targets (issue 5): export rows/s >= 0.3 x the ceiling; peak server memory < 100 MB above
the idle server.

    .venv/bin/python bench/export.py [--events 1000000] [--database sqlite|postgresql|both]
                                     [--database-url URL] [--verify]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from harness import (
    PG_SERVER,
    POLICY_DIR,
    ROOT,
    Table,
    app_server_command,
    free_port,
    machine,
    server,
    server_env,
    write_results,
)
from mission_log import prepared_log
from sqlalchemy.engine import make_url

RATIO_TARGET = 0.3
MEMORY_TARGET_MB = 100.0
AUDITOR = f"auditor.bench{secrets.token_hex(3)}"
PASSWORD = secrets.token_urlsafe(18)


def _group_rss_kb(pgid: int) -> int:
    """Resident memory of every process in the server's process group, in kB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # the fields after `(comm)`: state, ppid, pgrp, …
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total


class MemorySampler(threading.Thread):
    """Samples the server's RSS until stopped; keeps the peak."""

    def __init__(self, pgid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.interval = interval
        self.peak_kb = 0
        self.samples = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.peak_kb = max(self.peak_kb, _group_rss_kb(self.pgid))
            self.samples += 1
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stopping.set()
        self.join()
        return self.peak_kb


def create_auditor(url: str, key_file: Path) -> None:
    from app.config import Settings
    from app.context import build_context
    from app.users.schemas import UserCreate

    settings = Settings(database_url=url, policy_dir=POLICY_DIR, signing_key_file=key_file,
                        secret_key=secrets.token_urlsafe(48), argon2_time_cost=1,
                        argon2_memory_cost=1024)  # fmt: skip
    context = build_context(settings)
    try:
        with context.database.transaction() as session:
            body = UserCreate(username=AUDITOR, full_name="Bench Auditor", roles=["auditor"],
                              password=PASSWORD)  # fmt: skip
            context.users.create_user(session, None, body)
    finally:
        context.dispose()


def stream_export(base: str, headers: dict[str, str], out: Path | None) -> dict[str, Any]:
    """GET the whole events CSV; the client keeps nothing but a hash (and the file if asked)."""
    digest = hashlib.sha256()
    size = 0
    lines = 0
    sink = out.open("wb") if out else None
    started = time.perf_counter()
    try:
        with httpx.stream("GET", base + "/v1/exports/events.csv", headers=headers,
                          timeout=600) as response:  # fmt: skip
            response.raise_for_status()
            export_id = response.headers["x-export-id"]
            for chunk in response.iter_raw(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\r\n")
                if sink:
                    sink.write(chunk)
    finally:
        if sink:
            sink.close()
    elapsed = time.perf_counter() - started
    return {"export_id": export_id, "seconds": elapsed, "bytes": size, "lines": lines,
            "sha256": digest.hexdigest()}  # fmt: skip


def ceiling(url: str) -> dict[str, Any]:
    """The database's own CSV dump of every event, read by this process."""
    started = time.perf_counter()
    size = rows = 0
    if make_url(url).get_backend_name() == "postgresql":
        import psycopg

        plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain) as conn, conn.cursor() as cursor:
            query = "COPY (SELECT * FROM events ORDER BY seq) TO STDOUT WITH CSV"
            with cursor.copy(query) as copy:
                for data in copy:
                    size += len(data)
        with psycopg.connect(plain) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
            rows = int(row[0]) if row else 0
    else:

        class Discard:
            def write(self, text: str) -> int:
                nonlocal size
                size += len(text)
                return len(text)

        conn = sqlite3.connect(str(make_url(url).database))
        try:
            writer = csv.writer(Discard())
            cursor = conn.execute("SELECT * FROM events ORDER BY seq")
            while batch := cursor.fetchmany(1000):
                writer.writerows(batch)
                rows += len(batch)
        finally:
            conn.close()
    elapsed = time.perf_counter() - started
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed, "bytes": size}


def bench_database(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aa-bench-x-")))
        key_file = (args.key_dir or workdir) / "signing.pem"
        url, loaded = prepared_log(stack, kind, workdir, key_file, args)
        create_auditor(url, key_file)
        port = free_port()
        log = workdir / "server.log"
        env = server_env(url, POLICY_DIR, key_file)
        serving = ExitStack()
        running = serving.enter_context(server(app_server_command(port), env, port, log, workdir))
        base = running.base
        pgid = running.pid  # it leads its own session, so its process group has its id
        token = httpx.post(base + "/v1/auth/token", data={
            "grant_type": "password", "username": AUDITOR, "password": PASSWORD,
        }, timeout=30).json()["access_token"]  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        # Idle: started, signed in, one page read; the largest of a second of samples.
        httpx.get(base + "/v1/events?limit=10", headers=headers, timeout=30).raise_for_status()
        time.sleep(1)
        idle_kb = 0
        for _ in range(20):
            idle_kb = max(idle_kb, _group_rss_kb(pgid))
            time.sleep(0.05)
        sampler = MemorySampler(pgid)
        sampler.start()
        out = workdir / "events.csv" if args.verify else None
        export = stream_export(base, headers, out)
        peak_kb = sampler.stop()
        manifest_response = httpx.get(
            base + f"/v1/exports/{export['export_id']}/manifest", headers=headers, timeout=120
        )
        manifest_response.raise_for_status()
        manifest = manifest_response.json()
        if manifest["sha256"] != export["sha256"] or manifest["rows"] != export["lines"] - 1:
            raise RuntimeError("the streamed body does not match its signed manifest")
        verified = None
        if out is not None:
            (workdir / "manifest.json").write_text(manifest_response.text)
            key = httpx.get(base + "/v1/integrity/public-key", headers=headers, timeout=30)
            (workdir / "key.pem").write_text(key.text)
            done = subprocess.run(
                [sys.executable, str(ROOT / "tools" / "verify_export.py"), str(out),
                 "--manifest", str(workdir / "manifest.json"), "--public-key",
                 str(workdir / "key.pem")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            verified = (done.stdout + done.stderr).strip().splitlines()[-1:]
            if done.returncode != 0:
                raise RuntimeError(f"verify_export.py rejected the export: {verified}")
        serving.close()  # stop the server before timing the ceiling
        dump = ceiling(url)
    rows = manifest["rows"]
    rows_per_s = rows / export["seconds"]
    ratio = rows_per_s / dump["rows_per_s"]
    growth_mb = (peak_kb - idle_kb) / 1024
    print(f"[{kind}] export {rows:,} rows in {export['seconds']:.1f} s ({rows_per_s:,.0f}/s), "
          f"ceiling {dump['rows_per_s']:,.0f}/s, RSS idle {idle_kb / 1024:.0f} MB, "
          f"peak {peak_kb / 1024:.0f} MB", file=sys.stderr)  # fmt: skip
    return {
        "database": kind, "events": loaded.events, "export": {**export, "rows": rows,
        "rows_per_s": rows_per_s}, "ceiling": dump, "ratio": ratio, "ratio_target": RATIO_TARGET,
        "idle_rss_mb": idle_kb / 1024, "peak_rss_mb": peak_kb / 1024, "growth_mb": growth_mb,
        "memory_target_mb": MEMORY_TARGET_MB, "rss_samples": sampler.samples,
        "meets_targets": ratio >= RATIO_TARGET and growth_mb < MEMORY_TARGET_MB,
        "verify_export": verified,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--database-url", help="use (and fill if empty) this database instead")
    parser.add_argument("--pg-server", default=PG_SERVER, help="where to CREATE DATABASE")
    parser.add_argument("--key-dir", type=Path, help="keep the signing key here")
    parser.add_argument("--verify", action="store_true",
                        help="also keep the file and run tools/verify_export.py on it")  # fmt: skip
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

    table = Table(["database", "rows", "export rows/s", "ceiling rows/s", "ratio", "target",
                   "idle MB", "peak MB", "growth MB", "met"])  # fmt: skip
    for r in results:
        table.add(r["database"], r["export"]["rows"], r["export"]["rows_per_s"],
                  r["ceiling"]["rows_per_s"], f"{r['ratio']:.2f}", f">= {RATIO_TARGET}",
                  r["idle_rss_mb"], r["peak_rss_mb"], r["growth_mb"],
                  "yes" if r["meets_targets"] else "NO")  # fmt: skip
    print(table.render())
    path = write_results("export", {"benchmark": "export", "machine": machine(),
                                    "load_average": load, "results": results})  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
