"""The verifiable log at mission scale: proofs, tiles, checkpoint lag, the tree's ingest
cost and its storage, each against an honest ceiling measured in the same run.

For each database (a fresh SQLite file; a fresh PostgreSQL database, dropped afterwards):
bulk-load N events (bench/mission_log.py: judged, chained, with their Merkle tree and
signed chain checkpoints), run the service's start-up step in this process (the volume
summary and the first tree checkpoint, over the whole log: timed), start `access-audit
serve` (one worker), bootstrap the roster, an integration client and an auditor over HTTP.
Then, in rounds that alternate what is compared (so that a drift of a shared machine's
speed weighs on all alike; figures are medians or percentiles over all rounds):

1. proofs: GET /v1/log/proof/inclusion?seq=S&size=N (auditor) and
   GET /v1/log/proof/consistency?old=M&new=N (public) for random S, M < N on the latest
   checkpoint's size; the same proofs in process (`transparency.inclusion` /
   `transparency.consistency` on a read session, as the handlers call them); and the
   ceiling: the raw driver (sqlite3 / psycopg) reading exactly the tiles of `tree_hashes`
   the proof touches (found by running the proof over a recording tile reader), one
   indexed range query per tile, and nothing else (no hashing, no checkpoint, no event).
   Every HTTP proof is checked against the signed root (and consistency proofs against
   the roots of both sizes). Target: p95 < 5 ms over HTTP.
2. tiles: GET /v1/log/tile/0/<N> for random full tiles, MB/s, against the raw driver
   reading the same 256 rows per tile (the bytes compared). No target; the ratio is shown.
3. checkpoint lag: one client posts batches of 1,000 reports (POST /v1/events) flat out
   while another polls GET /v1/log/checkpoint every 50 ms; for each acknowledged batch the
   lag runs from its response to the first poll answered after it whose size covers its
   last seq. Target: p99 < 2 s. On PostgreSQL again with `--workers` workers (and as many
   posting clients).
4. the tree's ingest cost: on two fresh databases, `context.ledger.append(session, now,
   events)` in process, batches of 1,000 in their own transactions, one database as
   shipped, the other with the tree's upkeep monkeypatched away here (`grow` returns no
   rows, `leaf_hash` hashes nothing: no leaves, authenticators or tree rows), alternating
   `--ingest-rounds` rounds (which goes first alternates too); the ratio is the median of
   the rounds' ratios. Run first, on its own databases, before the big log is loaded.
   Target: >= 0.85. CPU per event: this process's (the append and, on SQLite, the
   database engine) and on PostgreSQL the backends'.
5. storage: bytes of `tree_hashes` (table and index; PostgreSQL pg_total_relation_size,
   SQLite the dbstat table) and its rows, per event, for the bulk-loaded log and for the
   log the appends of 4 wrote; `events` beside it for scale.

    .venv/bin/python bench/transparency.py [--events 1000000] [--database sqlite|postgresql|both]
        [--rounds 5] [--proofs 200] [--tiles 100] [--lag-batches 100] [--workers 4]
        [--ingest-events 100000] [--ingest-rounds 10]

`--events 100000` makes a quick run; the default (1,000,000) takes about 10 minutes a
database on a 2-core machine, most of it the bulk load.
"""

from __future__ import annotations

import argparse
import base64
import gc
import itertools
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from harness import (
    PG_SERVER,
    POLICY_DIR,
    RequestMix,
    Table,
    app_server_command,
    backend_cpu,
    backend_cpu_spent,
    bootstrap,
    client_token,
    create_admin,
    database,
    driver_dsn,
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
from ingest import reported_events
from mission_log import prepared_log
from sqlalchemy.engine import make_url

PROOF_P95_MS = 5.0
LAG_P99_S = 2.0
INGEST_RATIO = 0.85
BATCH = 1000
POLL_SECONDS = 0.05
TILE = 256
HASH = 32


# --- the ceiling: the raw driver ----------------------------------------------------------

TILE_SQL = (
    "SELECT position, hash FROM tree_hashes WHERE tile_level = {m} AND position >= {m} "
    "AND position < {m} ORDER BY position"
)


class RawTiles:
    """The raw driver on a connection of its own, reading tiles of `tree_hashes` as the
    service stores them: one indexed range query per tile."""

    def __init__(self, database_url: str) -> None:
        self.sqlite = database_url.startswith("sqlite")
        if self.sqlite:
            path = make_url(database_url).database
            assert path
            self.conn: Any = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.sql = TILE_SQL.format(m="?")
        else:
            import psycopg

            self.conn = psycopg.connect(driver_dsn(database_url), autocommit=True)
            self.sql = TILE_SQL.format(m="%s")

    def tile(self, level: int, index: int) -> bytes:
        start = index * TILE
        rows = self.conn.execute(self.sql, (level, start, start + TILE)).fetchall()
        return b"".join(bytes(row[1]) for row in rows)

    def tiles(self, plan: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.tile(level, index) for level, index in plan]

    def close(self) -> None:
        self.conn.close()


def touched_tiles(run: Callable[[Any], Any]) -> list[tuple[int, int]]:
    """The tiles (level, index) a proof reads: `run(hash_at)` over a recording reader (the
    hashes do not change which tiles a proof needs)."""
    from app.ledger.merkle import tile_hash_at

    seen: dict[tuple[int, int], None] = {}
    zeros = bytes(TILE * HASH)

    def tile(level: int, index: int) -> bytes:
        seen[(level, index)] = None
        return zeros

    run(tile_hash_at(tile))
    return list(seen)


# --- helpers -----------------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = call()
    return (time.perf_counter() - started) * 1000, answer


def stats_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": median(values),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else float("nan"),
    }


def note_size_root(note: str) -> tuple[int, bytes]:
    lines = note.split("\n")
    return int(lines[1]), base64.b64decode(lines[2])


def officer_token(base: str, admin: tuple[str, str], role: str = "auditor") -> str:
    """An officer of `role` with a password, made over the admin API; its token."""
    with httpx.Client(base_url=base, timeout=60) as http:
        form = {"grant_type": "password", "username": admin[0], "password": admin[1]}
        admin_token = http.post("/v1/auth/token", data=form).json()["access_token"]
        username, password = f"bench.{role}", secrets.token_urlsafe(18)
        body = {"username": username, "full_name": f"Bench {role.title()}", "roles": [role],
                "facilities": [], "volunteer": False, "password": password}  # fmt: skip
        http.post(
            "/v1/users", json=body, headers={"authorization": f"Bearer {admin_token}"}
        ).raise_for_status()
        form = {"grant_type": "password", "username": username, "password": password}
        response = http.post("/v1/auth/token", data=form)
        response.raise_for_status()
        return str(response.json()["access_token"])


def settled_checkpoint(base: str, quiet: float = 2.5, limit: float = 60) -> str:
    """The latest checkpoint once it has not changed for `quiet` seconds (the logins of
    the bootstrap are events too: the publisher signs them within a second)."""
    deadline = time.monotonic() + limit
    last, since = "", time.monotonic()
    while time.monotonic() < deadline:
        note = httpx.get(base + "/v1/log/checkpoint", timeout=30).text
        if note != last:
            last, since = note, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.25)
    return last


# --- 1. proofs -----------------------------------------------------------------------------


def bench_proofs(
    base: str, auditor: str, context: Any, raw: RawTiles, size: int, root: bytes, args: Any
) -> dict[str, Any]:
    import random

    from app.ledger import transparency
    from app.ledger.merkle import (
        consistency_proof,
        inclusion_proof,
        verify_consistency,
        verify_inclusion,
    )

    rng = random.Random(args.seed)
    tiles = context.transparency.tiles  # as the routes read: through the process's cache
    times: dict[str, list[float]] = {
        f"{what}_{how}": []
        for what in ("inclusion", "consistency")
        for how in ("http", "in_process", "raw")
    }
    times["healthz_http"] = []  # the HTTP floor: GET /healthz (no auth, no database)
    tiles_per_proof: dict[str, list[int]] = {"inclusion": [], "consistency": []}
    checked = {"inclusion": 0, "consistency": 0}
    headers = {"authorization": f"Bearer {auditor}"}
    with httpx.Client(base_url=base, timeout=60) as http:
        for _ in range(5):  # warm the connection, the pools and the caches
            http.get("/v1/log/proof/inclusion", params={"seq": 1, "size": size}, headers=headers)
            http.get("/v1/log/proof/consistency", params={"old": 1, "new": size})
        for number in range(args.rounds):
            seqs = [rng.randint(1, size) for _ in range(args.proofs)]
            pairs = []
            for _ in range(args.proofs):
                old = rng.randint(1, size - 1)
                pairs.append((old, rng.randint(old + 1, size)))
            for _ in seqs:
                times["healthz_http"].append(timed(lambda: http.get("/healthz"))[0])
            # inclusion: HTTP, in process, the raw tiles
            answers = []
            for seq in seqs:
                params = {"seq": seq, "size": size}
                ms, response = timed(
                    partial(http.get, "/v1/log/proof/inclusion", params=params, headers=headers)
                )
                if response.status_code != 200:
                    raise RuntimeError(f"inclusion {seq}: {response.status_code} {response.text}")
                times["inclusion_http"].append(ms)
                answers.append(response.json())
            for seq in seqs:

                def local(s: int = seq) -> Any:
                    with context.database.reader() as session:
                        return transparency.inclusion(session, s, size, tiles)

                times["inclusion_in_process"].append(timed(local)[0])
            plans = [
                touched_tiles(partial(inclusion_proof, index=seq - 1, size=size)) for seq in seqs
            ]
            for plan in plans:
                times["inclusion_raw"].append(timed(partial(raw.tiles, plan))[0])
            tiles_per_proof["inclusion"] += [len(p) for p in plans]
            for answer in answers:  # outside the timing: every proof leads to the signed root
                hashes = [base64.b64decode(h) for h in answer["hashes"]]
                leaf = base64.b64decode(answer["leaf_hash"])
                verify_inclusion(leaf, answer["index"], answer["tree_size"], hashes, root)
                checked["inclusion"] += 1
            # consistency: HTTP, in process, the raw tiles
            answers = []
            for old, new in pairs:
                params = {"old": old, "new": new}
                ms, response = timed(partial(http.get, "/v1/log/proof/consistency", params=params))
                if response.status_code != 200:
                    raise RuntimeError(f"consistency {old} {new}: {response.status_code}")
                times["consistency_http"].append(ms)
                answers.append(response.json())
            for old, new in pairs:

                def local_c(o: int = old, n: int = new) -> Any:
                    with context.database.reader() as session:
                        return transparency.consistency(session, o, n, tiles)

                times["consistency_in_process"].append(timed(local_c)[0])
            plans = [
                touched_tiles(partial(consistency_proof, old=old, new=new)) for old, new in pairs
            ]
            for plan in plans:
                times["consistency_raw"].append(timed(partial(raw.tiles, plan))[0])
            tiles_per_proof["consistency"] += [len(p) for p in plans]
            with context.database.reader() as session:
                for answer in answers[: args.check]:
                    old, new = answer["old_size"], answer["new_size"]
                    verify_consistency(
                        old, new, transparency.tree_root(session, old),
                        transparency.tree_root(session, new),
                        [base64.b64decode(h) for h in answer["hashes"]],
                    )  # fmt: skip
                    checked["consistency"] += 1
            print(
                f"  proofs round {number + 1}: inclusion p95 http "
                f"{percentile(times['inclusion_http'][-args.proofs :], 95):.2f} ms, "
                f"consistency p95 http "
                f"{percentile(times['consistency_http'][-args.proofs :], 95):.2f} ms",
                file=sys.stderr,
            )
    out: dict[str, Any] = {key: stats_ms(values) for key, values in times.items()}
    for what in ("inclusion", "consistency"):
        out[f"{what}_tiles_per_proof"] = median(tiles_per_proof[what])
        out[f"{what}_checked"] = checked[what]
        out[f"{what}_meets_target"] = out[f"{what}_http"]["p95_ms"] < PROOF_P95_MS
    out["tree_size"] = size
    return out


# --- 2. tiles ----------------------------------------------------------------------------


def bench_tiles(base: str, context: Any, raw: RawTiles, size: int, args: Any) -> dict[str, Any]:
    import random

    from app.ledger import transparency
    from app.ledger.merkle import tile_path

    rng = random.Random(args.seed + 1)
    full = size // TILE
    rounds: list[dict[str, float]] = []
    latencies: list[float] = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for n in range(3):
            http.get(f"/v1/log/{tile_path(0, n)}")
        for number in range(args.rounds):
            indexes = [rng.randrange(full) for _ in range(args.tiles)]
            got: list[bytes] = []
            started = time.perf_counter()
            for n in indexes:
                sent = time.perf_counter()
                response = http.get(f"/v1/log/{tile_path(0, n)}")
                latencies.append((time.perf_counter() - sent) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"tile 0/{n}: {response.status_code}")
                got.append(response.content)
            http_s = time.perf_counter() - started
            started = time.perf_counter()
            with context.database.reader() as session:
                for n in indexes:
                    transparency.tile(session, 0, n, None)
            local_s = time.perf_counter() - started
            started = time.perf_counter()
            expected = [raw.tile(0, n) for n in indexes]
            raw_s = time.perf_counter() - started
            if got != expected or any(len(t) != TILE * HASH for t in got):
                raise RuntimeError("a tile served is not the stored hashes")
            mb = len(indexes) * TILE * HASH / 1e6
            rounds.append({"http_mb_s": mb / http_s, "in_process_mb_s": mb / local_s,
                           "raw_mb_s": mb / raw_s, "ratio": raw_s / http_s})  # fmt: skip
            print(f"  tiles round {number + 1}: http {mb / http_s:.1f} MB/s, "
                  f"raw {mb / raw_s:.1f} MB/s", file=sys.stderr)  # fmt: skip
    return {
        "tiles_per_round": args.tiles,
        "http_mb_s": median([r["http_mb_s"] for r in rounds]),
        "in_process_mb_s": median([r["in_process_mb_s"] for r in rounds]),
        "raw_mb_s": median([r["raw_mb_s"] for r in rounds]),
        "ratio": median([r["ratio"] for r in rounds]),
        "http_latency": stats_ms(latencies),
        "rounds": rounds,
    }


# --- 3. checkpoint lag -------------------------------------------------------------------


def bench_lag(base: str, token: str, bodies: list[bytes], clients: int) -> dict[str, Any]:
    """Post `bodies` flat out (`clients` connections, each its share in order) while polling
    the checkpoint every 50 ms; the lag of each batch from its response to the first poll
    answered after it whose size covers the batch."""
    observations: list[tuple[float, int]] = []
    acks: list[tuple[float, int]] = []
    errors: list[str] = []
    stop = threading.Event()
    poll_errors = 0

    def poll() -> None:
        nonlocal poll_errors
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                sent = time.perf_counter()
                try:
                    response = http.get("/v1/log/checkpoint")
                    answered = time.perf_counter()
                    observations.append((answered, note_size_root(response.text)[0]))
                except (httpx.HTTPError, ValueError, IndexError):
                    poll_errors += 1
                    answered = time.perf_counter()
                stop.wait(max(0.0, POLL_SECONDS - (answered - sent)))

    def post(share: Sequence[bytes]) -> None:
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=300) as http:
                for body in share:
                    response = http.post("/v1/events", content=body)
                    done = time.perf_counter()
                    if response.status_code != 200:
                        raise RuntimeError(f"POST /v1/events -> {response.status_code}")
                    last = max(r["seq"] for r in json.loads(response.content)["results"])
                    acks.append((done, last))
        except Exception as exc:  # reported after the run
            errors.append(repr(exc))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    time.sleep(0.5)
    shares = [bodies[i::clients] for i in range(clients)]
    posters = [threading.Thread(target=post, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in posters:
        thread.start()
    for thread in posters:
        thread.join()
    ingest_s = time.perf_counter() - started
    wanted = max((last for _, last in acks), default=0)
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and not (observations and observations[-1][1] >= wanted):
        time.sleep(0.1)
    time.sleep(0.2)
    stop.set()
    poller.join(timeout=10)
    if errors:
        raise RuntimeError(f"ingest failed: {errors[0]}")
    lags, uncovered = [], 0
    for done, last in acks:
        seen = next((t for t, size in observations if t >= done and size >= last), None)
        if seen is None:
            uncovered += 1
        else:
            lags.append(seen - done)
    sizes = sorted({size for _, size in observations})
    # When each new checkpoint was first seen: the publisher's period as the client sees it.
    firsts = [t for (_, a), (t, b) in itertools.pairwise(observations) if b > a]
    periods = [b - a for a, b in itertools.pairwise(firsts)]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(observations)]
    return {
        "clients": clients,
        "batches": len(acks),
        "events": len(acks) * BATCH,
        "ingest_seconds": ingest_s,
        "ingest_events_per_s": len(acks) * BATCH / ingest_s,
        "polls": len(observations),
        "poll_errors": poll_errors,
        "poll_interval_p50_ms": median([g * 1000 for g in gaps]) if gaps else None,
        "checkpoints_seen": len(sizes),
        "checkpoint_period_p50_s": median(periods),
        "checkpoint_period_max_s": max(periods) if periods else None,
        "never_covered": uncovered,
        "lag_p50_s": median(lags),
        "lag_p99_s": percentile(lags, 99),
        "lag_max_s": max(lags) if lags else float("nan"),
        "meets_target": bool(lags) and not uncovered and percentile(lags, 99) < LAG_P99_S,
    }


# --- 4. ingest with and without the tree --------------------------------------------------


def new_events(n: int, seed: int, tag: str) -> list[list[Any]]:
    """N reports as the ledger takes them (NewEvent), in batches of BATCH."""
    from app.ledger.service import NewEvent

    mix = RequestMix(roster(), seed=seed)
    end = datetime.now(UTC) - timedelta(minutes=5)
    events = []
    for i in range(n):
        _, body = mix.next()
        record = body["record"]
        events.append(
            NewEvent(
                kind="report", occurred_at=end - timedelta(seconds=(n - i) * 0.05),
                actor=body["actor"], actor_roles=["guard_clerk"], action=body["action"],
                action_category="administrative", record_type=record["type"],
                record_id=record["id"], facility=record["facility"], purpose=body["purpose"],
                justification=body.get("justification"),
                break_glass=body.get("break_glass", False), decision="allow",
                source="cli_bench", client_event_id=f"{tag}-{i:07d}",
                policy_version="sha256:" + "5e" * 32, workstation=body["workstation"],
                source_ip="10.20.0.15",
            )
        )  # fmt: skip
    return [events[i : i + BATCH] for i in range(0, n, BATCH)]


@contextmanager
def tree_upkeep_disabled() -> Iterator[None]:
    """The append without the tree: `grow` stores no hashes (so no authenticators, no
    tree rows), `leaf_hash` hashes nothing. Local to this process, undone on the way out."""
    import app.ledger.service as service

    names = ("grow", "leaf_hash")
    saved = {name: getattr(service, name) for name in names}
    setattr(service, "grow", lambda size, leaves, stored: [])  # noqa: B010
    setattr(service, "leaf_hash", lambda data: b"")  # noqa: B010
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(service, name, value)


def _context(url: str, policy_dir: Path, key_file: Path) -> Any:
    from app.config import Settings
    from app.context import build_context

    settings = Settings(database_url=url, policy_dir=policy_dir, signing_key_file=key_file,
                        secret_key=secrets.token_urlsafe(48))  # fmt: skip
    return build_context(settings)


def bench_ingest(kind: str, workdir: Path, policy_dir: Path, args: Any) -> dict[str, Any]:
    """Appends in process on two fresh databases, one with the tree and one without."""
    from sqlalchemy import func, select

    from app.ledger.models import Event, TreeHash

    per_round = max(1, args.ingest_events // BATCH // args.ingest_rounds)
    variants = {"tree": "with the tree (as shipped)", "no_tree": "tree upkeep patched away"}
    batches = {
        v: new_events(per_round * args.ingest_rounds * BATCH, args.seed, v) for v in variants
    }
    rounds: list[dict[str, Any]] = []
    storage: dict[str, Any] = {}
    with ExitStack() as stack:
        contexts, urls = {}, {}
        for variant in variants:
            home = workdir / f"ingest-{variant}"
            home.mkdir()
            urls[variant] = stack.enter_context(database(kind, home, args.pg_server))
            contexts[variant] = _context(urls[variant], policy_dir, workdir / "signing.pem")
            stack.callback(contexts[variant].dispose)
            contexts[variant].start()  # appends the policy's activation (with its leaf)
        with contexts["no_tree"].database.reader() as session:
            rows_before = session.scalar(select(func.count()).select_from(TreeHash)) or 0
        for number in range(args.ingest_rounds):
            order = list(variants) if number % 2 == 0 else list(reversed(variants))
            result: dict[str, Any] = {}
            for variant in order:
                context = contexts[variant]
                mine = batches[variant][number * per_round : (number + 1) * per_round]
                db_before = backend_cpu(urls[variant])
                with ExitStack() as patch:
                    if variant == "no_tree":
                        patch.enter_context(tree_upkeep_disabled())
                    cpu = time.process_time()
                    started = time.perf_counter()
                    for events in mine:
                        with context.database.transaction() as session:
                            context.ledger.append(session, datetime.now(UTC), events)
                    elapsed = time.perf_counter() - started
                    cpu = time.process_time() - cpu
                db_cpu = backend_cpu_spent(db_before, backend_cpu(urls[variant]))
                count = len(mine) * BATCH
                result[variant] = {"events": count, "seconds": elapsed,
                                   "events_per_s": count / elapsed,
                                   "process_cpu_us_per_event": cpu * 1e6 / count,
                                   "db_cpu_us_per_event": None if db_cpu is None
                                   else db_cpu * 1e6 / count}  # fmt: skip
            result["ratio"] = result["tree"]["events_per_s"] / result["no_tree"]["events_per_s"]
            rounds.append(result)
            print(f"  ingest round {number + 1}: tree {result['tree']['events_per_s']:,.0f} ev/s,"
                  f" no tree {result['no_tree']['events_per_s']:,.0f} ev/s, "
                  f"ratio {result['ratio']:.3f}", file=sys.stderr)  # fmt: skip
        for variant, context in contexts.items():
            with context.database.reader() as session:
                logged = session.scalar(select(func.count()).select_from(Event)) or 0
                tree_rows = session.scalar(select(func.count()).select_from(TreeHash)) or 0
            if variant == "no_tree" and tree_rows != rows_before:
                raise RuntimeError("the patched append stored tree rows")
            if variant == "tree":
                if tree_rows < logged:
                    raise RuntimeError(f"{logged} events but {tree_rows} tree rows")
                with context.database.transaction() as session:  # the tree is right
                    row = context.transparency.publish(session)
                if row is None or row.size != logged:
                    raise RuntimeError("no checkpoint over the appended events")
                storage = tree_storage(urls[variant])

    def med(variant: str, key: str) -> float | None:
        values = [r[variant][key] for r in rounds]
        return None if None in values else median(values)

    ratio = median([r["ratio"] for r in rounds])
    return {
        "batch": BATCH,
        "events_per_variant": per_round * args.ingest_rounds * BATCH,
        "tree": {k: med("tree", k) for k in ("events_per_s", "process_cpu_us_per_event",
                                               "db_cpu_us_per_event")},
        "no_tree": {k: med("no_tree", k) for k in ("events_per_s", "process_cpu_us_per_event",
                                                     "db_cpu_us_per_event")},
        "ratio": ratio,
        "ratio_by_round": [r["ratio"] for r in rounds],
        "target": INGEST_RATIO,
        "meets_target": ratio >= INGEST_RATIO,
        "storage_of_appended_log": storage,
        "rounds": rounds,
    }  # fmt: skip


# --- 5. storage ----------------------------------------------------------------------------


def tree_storage(database_url: str) -> dict[str, Any]:
    """Bytes and rows of `tree_hashes` (and of `events`, for scale), per event."""
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database
        assert path
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

            def size(table: str) -> tuple[int, int]:
                names = [table] + [
                    r[0]
                    for r in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                        (table,),
                    )
                ]
                total = index = 0
                for name in names:
                    row = conn.execute(
                        "SELECT pgsize FROM dbstat WHERE name = ? AND aggregate = TRUE", (name,)
                    ).fetchone()
                    total += row[0] if row and row[0] else 0
                    index += row[0] if row and row[0] and name != table else 0
                return total, index

            tree, tree_index = size("tree_hashes")
            events_bytes, _ = size("events")
            rows = conn.execute("SELECT count(*) FROM tree_hashes").fetchone()[0]
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            levels = conn.execute(
                "SELECT tile_level, count(*) FROM tree_hashes GROUP BY tile_level"
            ).fetchall()
            how = "dbstat (WITHOUT ROWID: the primary key is the table)"
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(driver_dsn(database_url), autocommit=True) as pg:
            found = pg.execute(
                "SELECT pg_total_relation_size('tree_hashes'), pg_indexes_size('tree_hashes'),"
                " pg_total_relation_size('events'), (SELECT count(*) FROM tree_hashes),"
                " (SELECT count(*) FROM events)"
            ).fetchone()
            assert found is not None
            tree, tree_index, events_bytes, rows, events = found
            levels = pg.execute(
                "SELECT tile_level, count(*) FROM tree_hashes GROUP BY tile_level ORDER BY 1"
            ).fetchall()
        how = "pg_total_relation_size (heap, TOAST, primary key index)"
    return {
        "how": how,
        "events": events,
        "tree_rows": rows,
        "tree_rows_by_level": {int(level): int(n) for level, n in levels},
        "tree_bytes": tree,
        "tree_index_bytes": tree_index,
        "events_bytes": events_bytes,
        "tree_rows_per_event": rows / events if events else None,
        "tree_bytes_per_event": tree / events if events else None,
        "events_bytes_per_event": events_bytes / events if events else None,
    }


# --- a database ----------------------------------------------------------------------------


def bench_database(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from app.ledger import transparency

    result: dict[str, Any] = {"database": kind, "load_average_before": os.getloadavg()}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aa-bench-tl-")))
        key_file = workdir / "signing.pem"
        policy_dir, extended = policy_for_today(workdir, POLICY_DIR, True)
        result["policy_window_extended_to"] = extended

        print(f"[{kind}] ingest with and without the tree ...", file=sys.stderr)
        from app.ledger.signing import Signer

        key_file.write_bytes(Signer.new_key_pem())
        result["ingest"] = bench_ingest(kind, workdir, policy_dir, args)

        url, loaded = prepared_log(stack, kind, workdir, key_file, args)
        result["events"] = loaded.events
        result["load_seconds"] = loaded.seconds
        result["storage"] = tree_storage(url)
        context = _context(url, policy_dir, key_file)
        stack.callback(context.dispose)
        started = time.perf_counter()
        context.start()  # the volume summary and the first tree checkpoint, over the log
        result["start_seconds"] = time.perf_counter() - started
        print(f"[{kind}] start-up step (volume summary, first checkpoint of "
              f"{loaded.events:,} events): {result['start_seconds']:.1f} s",
              file=sys.stderr)  # fmt: skip
        started = time.perf_counter()
        with context.database.reader() as session:
            row = context.transparency.next_checkpoint(session)
            assert row is None, "the start-up step left the tree unsigned"
        result["next_checkpoint_idle_ms"] = (time.perf_counter() - started) * 1000
        gc.freeze()

        env = server_env(url, policy_dir, key_file)
        admin = create_admin(env, workdir)
        port = free_port()
        raw = RawTiles(url)
        stack.callback(raw.close)
        with server(app_server_command(port, 1), env, port, workdir / "server.log",
                    workdir) as running:  # fmt: skip
            made = bootstrap(running.base, admin, roster())
            token = client_token(running.base, made.client_id, made.client_secret)
            auditor = officer_token(running.base, admin)
            size, root = note_size_root(settled_checkpoint(running.base))
            with context.database.reader() as session:
                if transparency.tree_root(session, size) != root:
                    raise RuntimeError("the checkpoint's root is not the stored tree's")
            print(f"[{kind}] proofs on the tree of size {size:,} ...", file=sys.stderr)
            result["proofs"] = bench_proofs(running.base, auditor, context, raw, size, root, args)
            print(f"[{kind}] tiles ...", file=sys.stderr)
            result["tiles"] = bench_tiles(running.base, context, raw, size, args)
            print(f"[{kind}] checkpoint lag under ingest (1 worker) ...", file=sys.stderr)
            bodies = batch_bodies(args.lag_batches, args.seed)
            cpu = running.cpu_seconds()
            result["lag"] = [bench_lag(running.base, token, bodies, 1)]
            after = running.cpu_seconds()
            result["lag"][0]["workers"] = 1
            if cpu is not None and after is not None:
                result["lag"][0]["server_cpu_us_per_event"] = (
                    (after - cpu) * 1e6 / result["lag"][0]["events"]
                )
            print(f"  lag p50 {result['lag'][0]['lag_p50_s']:.3f} s, p99 "
                  f"{result['lag'][0]['lag_p99_s']:.3f} s", file=sys.stderr)  # fmt: skip
        if kind == "postgresql" and args.workers > 1:
            print(f"[{kind}] checkpoint lag under ingest ({args.workers} workers) ...",
                  file=sys.stderr)  # fmt: skip
            port = free_port()
            with server(app_server_command(port, args.workers), env, port,
                        workdir / "server4.log", workdir) as running:  # fmt: skip
                settled_checkpoint(running.base)
                bodies = batch_bodies(args.lag_batches, args.seed + 1)
                lag = bench_lag(running.base, token, bodies, args.workers)
                lag["workers"] = args.workers
                result["lag"].append(lag)
                print(f"  lag p50 {lag['lag_p50_s']:.3f} s, p99 {lag['lag_p99_s']:.3f} s",
                      file=sys.stderr)  # fmt: skip
    result["load_average_after"] = os.getloadavg()
    return result


def batch_bodies(batches: int, seed: int) -> list[bytes]:
    events = reported_events(batches * BATCH, seed)
    return [
        json.dumps({"events": events[i : i + BATCH]}).encode() for i in range(0, len(events), BATCH)
    ]


# --- output --------------------------------------------------------------------------------


def yes(value: bool) -> str:
    return "yes" if value else "NO"


def render(results: list[dict[str, Any]]) -> str:
    table = Table(["database", "what", "service", "in process", "ceiling", "ratio", "target",
                   "met"])  # fmt: skip
    for r in results:
        db, p = r["database"], r["proofs"]
        for what in ("inclusion", "consistency"):
            http, local, raw = p[f"{what}_http"], p[f"{what}_in_process"], p[f"{what}_raw"]
            for q in ("p50_ms", "p95_ms"):
                table.add(db, f"{what} proof {q[:3]} ms", f"{http[q]:.2f}", f"{local[q]:.2f}",
                          f"{raw[q]:.3f}", f"{http[q] / raw[q]:.1f}x",
                          f"< {PROOF_P95_MS:.0f}" if q == "p95_ms" else "",
                          yes(p[f"{what}_meets_target"]) if q == "p95_ms" else "")  # fmt: skip
        floor = p["healthz_http"]
        table.add(db, "HTTP floor: GET /healthz p50/p95 ms",
                  f"{floor['p50_ms']:.2f}/{floor['p95_ms']:.2f}", "", "", "", "", "")  # fmt: skip
        t = r["tiles"]
        table.add(db, "tile 0/N MB/s", f"{t['http_mb_s']:.1f}", f"{t['in_process_mb_s']:.1f}",
                  f"{t['raw_mb_s']:.1f}", f"{t['ratio']:.2f}", "", "")  # fmt: skip
        for lag in r["lag"]:
            table.add(db, f"checkpoint lag p50/p99/max s ({lag['workers']} w)",
                      f"{lag['lag_p50_s']:.2f}/{lag['lag_p99_s']:.2f}/{lag['lag_max_s']:.2f}",
                      "", "", "", f"p99 < {LAG_P99_S:.0f}", yes(lag["meets_target"]))  # fmt: skip
            table.add(db, f"  ingest during lag ({lag['workers']} w) ev/s",
                      f"{lag['ingest_events_per_s']:,.0f}", "", "", "", "", "")  # fmt: skip
        i = r["ingest"]
        table.add(db, "append ev/s: tree / no tree", "", f"{i['tree']['events_per_s']:,.0f}",
                  f"{i['no_tree']['events_per_s']:,.0f}", f"{i['ratio']:.3f}",
                  f">= {INGEST_RATIO}", yes(i["meets_target"]))  # fmt: skip
        cpu = i["tree"]["process_cpu_us_per_event"], i["no_tree"]["process_cpu_us_per_event"]
        table.add(db, "append CPU µs/ev: tree / no tree", "", f"{cpu[0]:.0f}", f"{cpu[1]:.0f}",
                  f"{cpu[0] / cpu[1]:.2f}", "", "")  # fmt: skip
        if i["tree"]["db_cpu_us_per_event"] is not None:
            dbc = i["tree"]["db_cpu_us_per_event"], i["no_tree"]["db_cpu_us_per_event"]
            table.add(db, "  backend CPU µs/ev: tree / no tree", "", f"{dbc[0]:.0f}",
                      f"{dbc[1]:.0f}", f"{dbc[0] / dbc[1]:.2f}", "", "")  # fmt: skip
        for label, s in (("bulk-loaded", r["storage"]),
                         ("appended", i["storage_of_appended_log"])):  # fmt: skip
            table.add(db, f"tree bytes/event ({label})", f"{s['tree_bytes_per_event']:.1f}",
                      "", "", "", "", "")  # fmt: skip
            table.add(db, f"tree rows/event ({label})", f"{s['tree_rows_per_event']:.4f}",
                      "", "", "", "", "")  # fmt: skip
    return table.render()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-server", default=PG_SERVER, help="where to CREATE DATABASE")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each")
    parser.add_argument("--proofs", type=int, default=200, help="proofs of each kind a round")
    parser.add_argument("--check", type=int, default=50,
                        help="consistency proofs a round checked against both roots")  # fmt: skip
    parser.add_argument("--tiles", type=int, default=100, help="tiles a round")
    parser.add_argument("--lag-batches", type=int, default=100, help="batches of 1,000 posted")
    parser.add_argument("--workers", type=int, default=4, help="PostgreSQL's second lag run")
    parser.add_argument("--ingest-events", type=int, default=100_000,
                        help="appended with the tree, and again without it")  # fmt: skip
    parser.add_argument("--ingest-rounds", type=int, default=10, help="alternating, of 4")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.database_url = None  # prepared_log: always a fresh database
    if args.events < 2 * TILE:
        parser.error("--events must be at least 512")
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [bench_database(kind, args) for kind in kinds]
    print(render(results))
    print(
        f"targets: proof p95 < {PROOF_P95_MS:.0f} ms over HTTP (service column; in process: "
        "the transparency functions on a read session; ceiling: the raw driver reading the "
        f"tiles the proof touches); checkpoint lag p99 < {LAG_P99_S:.0f} s under flat-out "
        f"ingest; append with the tree >= {INGEST_RATIO} x without it (median of "
        f"{args.ingest_rounds} alternating rounds). Tiles: ratio = HTTP MB/s / raw MB/s."
    )
    for r in results:
        print(f"{r['database']}: {r['events']:,} events loaded in {r['load_seconds']:.0f} s; "
              f"start-up step {r['start_seconds']:.1f} s")  # fmt: skip
    path = write_results("transparency", {
        "benchmark": "transparency", "machine": machine(), "events": args.events,
        "rounds": args.rounds, "proofs_per_round": args.proofs, "tiles_per_round": args.tiles,
        "lag_batches": args.lag_batches, "results": results,
    })  # fmt: skip
    print(f"wrote {path}")
    ok = all(
        r["proofs"]["inclusion_meets_target"] and r["proofs"]["consistency_meets_target"]
        and all(lag["meets_target"] for lag in r["lag"]) and r["ingest"]["meets_target"]
        for r in results
    )  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
