"""A year of the mission as a bulk-loaded log, for the query and export benchmarks.

Not a benchmark itself (running it does nothing). The events are judged by the real
compiled policy (the shipped one: the mission window is the real one, October 2025 to
September 2026) from the benchmark roster and request mix, chained with the real canonical
form and hash, and inserted through the bulk path: Core executemany on SQLite, COPY on
PostgreSQL, with a signed checkpoint every 1,000 events as the ledger would write.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import POLICY_DIR, RequestMix, roster
from sqlalchemy import func, insert, select, text

CHUNK = 20_000
REPORT_SHARE = 0.3
LOGIN_SHARE = 0.01
TRAINED_ON = (date(2025, 9, 15), date(2026, 9, 1))  # the yearly renewal lands in time


@dataclass
class LoadedLog:
    """What the benchmarks need to know about the log they query."""

    events: int
    seconds: float
    records: list[tuple[str, str]] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None


def _profiles(policy: Any) -> dict[str, Any]:
    from app.policy.evaluator import ActorProfile, TrainingRecord

    profiles = {}
    for spec in roster():
        training = {}
        if spec.training_age_days is not None and spec.training_age_days < 365:
            training = {
                module: tuple(
                    TrainingRecord(module, done, policy.training_expiry(module, done))
                    for done in TRAINED_ON
                )
                for module in policy.required_training
            }
        profiles[spec.username] = ActorProfile(
            username=spec.username,
            roles=spec.roles,
            facilities=frozenset(spec.facilities),
            volunteer=spec.volunteer,
            active=spec.active,
            training=training,
        )
    return profiles


def _arrivals(n: int, rng: random.Random, policy: Any) -> list[datetime]:
    """N arrival times over the mission window, mostly in working hours, in order."""
    start = datetime(
        policy.window_start.year, policy.window_start.month, policy.window_start.day,
        tzinfo=policy.timezone,
    )  # fmt: skip
    days = (policy.window_end - policy.window_start).days + 1
    times = []
    for _ in range(n):
        day = start + timedelta(days=rng.randrange(days))
        hour = rng.uniform(7, 19) if rng.random() < 0.88 else rng.uniform(0, 24)
        times.append((day + timedelta(hours=hour)).astimezone(UTC))
    times.sort()
    return times


def generate(
    n: int, seed: int, facts: bool = False
) -> Iterator[tuple[list[dict[str, Any]], list[bytes]]]:
    """The log's rows (every column of `events`), chained, CHUNK rows at a time, with
    their leaf hashes in the Merkle tree.

    With `facts`, the log is the one the service writes today: its first event is the
    activation of the shipped policy (`kind: "policy"`, its full content, as the first
    start-up records it), and every decision and report records the facts it was judged
    on (`details.facts`: `actor_facts` of the profile on the local date, and the distinct
    records in the volume window) and its reasons with their data, as
    `app.access.service` does; `access-audit replay` can judge it again."""
    from app.ledger.canonical import GENESIS_HASH, canonical_bytes, chain_hash, format_timestamp
    from app.ledger.merkle import leaf_hash
    from app.policy.evaluator import AccessRequest, actor_facts
    from app.policy.loader import load_policy

    policy = load_policy(POLICY_DIR)
    profiles = _profiles(policy)
    mix = RequestMix(roster(), seed=seed)
    rng = random.Random(seed)
    prev = GENESIS_HASH
    chunk: list[dict[str, Any]] = []
    leaves: list[bytes] = []
    arrivals = _arrivals(n - 1 if facts else n, rng, policy)
    facts_of: dict[tuple[str, date], dict[str, Any] | None] = {}
    if facts:
        at = arrivals[0] - timedelta(days=1)
        row = {
            "seq": 1, "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "kind": "policy", "recorded_at": at, "occurred_at": at, "actor": "system",
            "actor_roles": [], "action": "activate", "action_category": None,
            "record_type": "policy", "record_id": policy.version, "facility": None,
            "purpose": None, "justification": None, "break_glass": None, "decision": None,
            "reasons": [], "flags": [], "source": "system", "client_event_id": None,
            "policy_version": policy.version, "workstation": None, "source_ip": None,
            "details": {
                "version": policy.version, "content": dict(policy.content),
                "authority": "the shipped policy (benchmark)", "proposed_by": None,
                "approved_by": None, "effective_from": format_timestamp(at),
                "source": "the policy folder at the service's first start-up",
            },
        }  # fmt: skip
        canonical = canonical_bytes(row)
        row["prev_hash"] = GENESIS_HASH
        row["hash"] = prev = chain_hash(prev, canonical)
        chunk.append(row)
        leaves.append(leaf_hash(canonical))
    for seq, arrived in enumerate(arrivals, start=2 if facts else 1):
        row: dict[str, Any] = {
            "seq": seq, "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "recorded_at": arrived, "occurred_at": arrived, "actor_roles": [], "action": None,
            "action_category": None, "record_type": None, "record_id": None, "facility": None,
            "purpose": None, "justification": None, "break_glass": None, "decision": None,
            "reasons": [], "flags": [], "client_event_id": None, "policy_version": None,
            "workstation": None, "details": {},
            "source_ip": f"10.20.{rng.randrange(4)}.{rng.randrange(2, 250)}",
        }  # fmt: skip
        if rng.random() < LOGIN_SHARE:
            name = rng.choice(list(profiles))
            row.update(kind="login", actor=name, actor_roles=list(profiles[name].roles),
                       action="login", decision="allow", source=name,
                       details={"grant": "password", "outcome": "success"})  # fmt: skip
        else:
            _, body = mix.next()
            reported = rng.random() < REPORT_SHARE
            occurred = arrived
            if reported:
                late = rng.random() < 0.01
                occurred = arrived - timedelta(hours=rng.uniform(25, 60) if late else
                                               rng.uniform(0.01, 2))  # fmt: skip
            profile = profiles.get(body["actor"])
            request = AccessRequest(
                action=body["action"], facility=body["record"]["facility"],
                purpose=body["purpose"], record_type=body["record"]["type"],
                record_id=body["record"]["id"], justification=body.get("justification"),
                break_glass=body.get("break_glass", False),
            )  # fmt: skip
            distinct = 51 if rng.random() < 0.002 else 1
            judgement = policy.judge(
                profile, request, occurred, reported_at=arrived if reported else None,
                distinct_records_in_window=distinct,
            )  # fmt: skip
            row.update(
                kind="report" if reported else "decision", occurred_at=occurred,
                actor=body["actor"], actor_roles=list(profile.roles) if profile else [],
                action=request.action, action_category=judgement.category,
                record_type=request.record_type, record_id=request.record_id,
                facility=request.facility, purpose=request.purpose,
                justification=request.justification, break_glass=request.break_glass,
                decision=judgement.decision, reasons=judgement.reason_codes,
                flags=[f.value for f in judgement.flags], source="cli_bench",
                client_event_id=f"ev-{seq}" if reported else None,
                policy_version=policy.version, workstation=body["workstation"],
                details={"reasons": [{"code": r.code.value, "message": r.message}
                                     for r in judgement.reasons]} if judgement.reasons else {},
            )  # fmt: skip
            if facts:
                key = (body["actor"], policy.local_date(occurred))
                if key not in facts_of:
                    facts_of[key] = actor_facts(profile, key[1])
                details: dict[str, Any] = {
                    "facts": {"actor": facts_of[key], "distinct_records": distinct}
                }
                if judgement.reasons:
                    details["reasons"] = [r.as_json() for r in judgement.reasons]
                row["details"] = details
        canonical = canonical_bytes(row)
        row["prev_hash"] = prev
        row["hash"] = prev = chain_hash(prev, canonical)
        chunk.append(row)
        leaves.append(leaf_hash(canonical))
        if len(chunk) == CHUNK:
            yield chunk, leaves
            chunk, leaves = [], []
    if chunk:
        yield chunk, leaves


def load(database_url: str, n: int, seed: int, key_file: Path, facts: bool = False) -> LoadedLog:
    """Fill an empty, migrated database with N events (their checkpoints, and the Merkle
    tree the append would have kept)."""
    from app.db import make_engine
    from app.ledger.merkle import TreeBuilder
    from app.ledger.models import Checkpoint, Event, SigningKey, TreeHash
    from app.ledger.signing import Authenticator, Signer, checkpoint_message

    if not key_file.exists():
        key_file.write_bytes(Signer.new_key_pem())
    signer = Signer.from_pem_file(key_file)
    engine = make_engine(database_url)
    started = time.perf_counter()
    loaded = LoadedLog(events=0, seconds=0.0)
    records: set[tuple[str, str]] = set()
    actors: set[str] = set()
    try:
        with engine.begin() as conn:
            conn.execute(insert(SigningKey.__table__), [{
                "key_id": signer.key_id, "public_key_pem": signer.public_key_pem,
                "created_at": datetime.now(UTC),
            }])  # fmt: skip
        tree = TreeBuilder()
        mark = Authenticator.of(signer.private_key).mark
        for chunk, leaves in generate(n, seed, facts):
            checkpoints = [
                {"seq": r["seq"], "hash": r["hash"], "signed_at": r["recorded_at"],
                 "key_id": signer.key_id,
                 "signature": signer.sign(checkpoint_message(
                     r["seq"], r["hash"], r["recorded_at"], signer.key_id))}
                for r in chunk if r["seq"] % 1000 == 0
            ]  # fmt: skip
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    _copy(conn, chunk)
                else:
                    conn.execute(insert(Event.__table__), chunk)
                if checkpoints:
                    conn.execute(insert(Checkpoint.__table__), checkpoints)
                conn.execute(insert(TreeHash.__table__), [
                    {"tile_level": level, "position": position, "hash": value,
                     "authenticator": mark(value) if level == 0 else None}
                    for level, position, value in tree.add(leaves)
                ])  # fmt: skip
            for r in chunk:
                if r["kind"] in ("decision", "report"):
                    records.add((r["record_type"], r["record_id"]))
                    actors.add(r["actor"])
            loaded.events += len(chunk)
            loaded.first = loaded.first or chunk[0]["occurred_at"]
            loaded.last = chunk[-1]["recorded_at"]
            print(f"\rloaded {loaded.events:,} events", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        _sign_the_tree(engine, signer, tree.size)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql":
                # What autovacuum does after a bulk load: statistics and the visibility map,
                # of every table the load filled (the tree's too: unvacuumed, a tile read
                # was a bitmap scan and a sort instead of an index scan, 0.14 ms against
                # 0.07 on the server, with autovacuum off as on the benchmark machine).
                conn.execute(text("VACUUM ANALYZE"))
            else:
                conn.execute(text("ANALYZE"))
            count = conn.scalar(select(func.count()).select_from(Event.__table__))
            if count != loaded.events:
                raise RuntimeError(f"loaded {loaded.events} events but the table holds {count}")
    finally:
        engine.dispose()
    loaded.seconds = time.perf_counter() - started
    loaded.records = sorted(records)
    loaded.actors = sorted(actors)
    return loaded


ORIGIN = "bench.invalid/mission-log"


def _sign_the_tree(engine: Any, signer: Any, size: int) -> None:
    """The tree checkpoint the service would have published over the loaded log (under a
    fixed origin), so that a server started on it has nothing to re-check first."""
    from sqlalchemy.orm import Session

    from app.ledger import transparency
    from app.ledger.merkle import range_hash
    from app.ledger.models import LogSetting, TreeCheckpoint
    from app.ledger.note import Checkpoint as Note
    from app.ledger.note import NoteSigner

    with Session(engine) as session, session.begin():
        root = range_hash(transparency.hash_reader(session, size), 0, size)
        text_ = Note(ORIGIN, size, root).text
        note = text_ + "\n" + NoteSigner(ORIGIN, signer.private_key).signature_line(text_)
        session.execute(insert(LogSetting), [{"name": "origin", "value": ORIGIN}])
        session.execute(insert(TreeCheckpoint), [
            {"size": size, "root": root, "note": note, "signed_at": datetime.now(UTC)}
        ])  # fmt: skip


def _copy(conn: Any, rows: list[dict[str, Any]]) -> None:
    """COPY rows into `events` (PostgreSQL's bulk path)."""
    from app.ledger.models import Event

    columns = [c.name for c in Event.__table__.columns]
    json_columns = {"actor_roles", "reasons", "flags", "details"}
    raw = conn.connection.driver_connection
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY events ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row([
                json.dumps(row[c]) if c in json_columns else row[c] for c in columns
            ])  # fmt: skip


def prepared_log(
    stack: ExitStack, kind: str, workdir: Path, key_file: Path, args: Any
) -> tuple[str, LoadedLog]:
    """A database holding the benchmark log: `--database-url` as given (loaded if empty),
    else a fresh one of `kind` that `stack` drops afterwards."""
    from harness import database

    if args.database_url:
        from app.migrate import upgrade

        url = args.database_url
        upgrade(url)
    else:
        url = stack.enter_context(database(kind, workdir, args.pg_server))
    loaded = describe(url)
    if loaded.events == 0:
        loaded = load(url, args.events, args.seed, key_file)
        print(f"[{kind}] loaded {loaded.events:,} events in {loaded.seconds:.0f} s",
              file=sys.stderr)  # fmt: skip
    else:
        print(f"[{kind}] reusing {loaded.events:,} events at {url}", file=sys.stderr)
    return url, loaded


def describe(database_url: str) -> LoadedLog:
    """What an already-loaded database holds (for re-runs with `--reuse`)."""
    from app.db import make_engine
    from app.ledger.models import Event

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            count = conn.scalar(select(func.count()).select_from(Event.__table__)) or 0
            first, last = conn.execute(
                select(func.min(Event.occurred_at), func.max(Event.recorded_at))
            ).one()
            sample = conn.execute(
                select(Event.record_type, Event.record_id, Event.actor).where(
                    Event.kind.in_(["decision", "report"]), Event.seq % 97 == 0
                )
            ).all()
    finally:
        engine.dispose()
    return LoadedLog(
        events=count, seconds=0.0,
        records=sorted({(r.record_type, r.record_id) for r in sample}),
        actors=sorted({r.actor for r in sample}), first=first, last=last,
    )  # fmt: skip
