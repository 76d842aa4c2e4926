"""Verification speed: `access-audit verify` over a large log against the bare hashing loop.

For each database (a fresh SQLite file by default; `--database-url postgresql+psycopg://…`
names a server on which a fresh database is created and dropped afterwards): build an
N-event log the way the service would have written it (real canonical form, real chain
hashes, a real Ed25519 checkpoint every 1,000 events), bulk-inserted (Core executemany on
SQLite, COPY on PostgreSQL); then run `access-audit verify --json` as a subprocess over the
whole log and over its first tenth (its peak RSS shows whether memory grows with the log),
and in this process time the bare loop over the same rows held in memory, doing the same
checks: `sha256(prev_hash || canonical_bytes(row))`, the leaf hash, the authenticator's
HMAC, and the tree's root folded leaf by leaf and compared at each checkpointed size
(interleaved with the verify runs, the best of two of each). The log carries its Merkle
tree, the leaves' authenticators and a tree checkpoint every 1,000 events, as the service
writes them; verify runs with the signing key at hand, so it checks the authenticators.
Target (issue 4): verify rate >= 0.5 x the bare loop's rate, with memory that does not
grow with the log.

    .venv/bin/python bench/verify.py [--events 1000000] [--database-url URL ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import (
    PG_SERVER,
    ROOT,
    VENV_BIN,
    Table,
    checkout_env,
    database,
    machine,
    write_results,
)
from sqlalchemy import insert, text

from app.db import make_engine
from app.ledger.canonical import GENESIS_HASH, canonical_bytes, chain_hash
from app.ledger.merkle import TreeBuilder, leaf_hash, node_hash
from app.ledger.models import Checkpoint, Event, LogSetting, SigningKey, TreeCheckpoint, TreeHash
from app.ledger.note import Checkpoint as Note
from app.ledger.note import NoteSigner
from app.ledger.signing import Authenticator, Signer, checkpoint_message

ORIGIN = "bench.invalid/verify"

TARGET = 0.5
INTERVAL = 1000
CHUNK = 10_000
COLUMNS = [c.name for c in Event.__table__.columns]
FACILITIES = {"greene": "GRN", "phelps": "PHE", "ste_genevieve": "STG"}
ACTIONS = [
    ("read_case", "administrative", "records_request"),
    ("update_case", "administrative", "case_update"),
    ("create_case", "administrative", "intake_processing"),
    ("schedule_transfer", "administrative", "transfer_scheduling"),
    ("move_supplies", "logistics", "supply_logistics"),
    ("transport_detainee", "sworn", "transfer_scheduling"),
]
REASONS = ["training_expired", "facility_not_assigned", "enforcement_action_forbidden"]


Built = tuple[
    list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]
]


def build_log(n: int, signer: Signer) -> Built:
    """N chained events shaped like the service's decisions, their checkpoints, and the
    tree's rows and checkpoints."""
    rng = random.Random(2025)
    start = datetime(2025, 10, 1, 12, tzinfo=UTC)
    actors = [f"sgt.user{i:03d}" for i in range(300)]
    policy = "sha256:" + "5e" * 32
    prev = GENESIS_HASH
    rows: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    tree: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    builder, mark = TreeBuilder(), Authenticator.of(signer.private_key).mark
    roots = _Roots()
    note_key = NoteSigner(ORIGIN, signer.private_key)
    for seq in range(1, n + 1):
        at = start + timedelta(seconds=seq * 3, microseconds=rng.randrange(1_000_000))
        action, category, purpose = rng.choice(ACTIONS)
        facility = rng.choice(list(FACILITIES))
        denied = category == "sworn" or rng.random() < 0.06
        reasons = rng.sample(REASONS, rng.randint(1, 2)) if denied else []
        row = {
            "seq": seq,
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "kind": "decision" if rng.random() < 0.7 else "report",
            "recorded_at": at,
            "occurred_at": at - timedelta(seconds=rng.randrange(5)),
            "actor": rng.choice(actors),
            "actor_roles": ["guard_clerk"],
            "action": action,
            "action_category": category,
            "record_type": "detainee_case",
            "record_id": f"{FACILITIES[facility]}-2025-{rng.randrange(100_000):05d}",
            "facility": facility,
            "purpose": purpose,
            "justification": "Backlog at the sally port" if rng.random() < 0.05 else None,
            "break_glass": False,
            "decision": "deny" if denied else "allow",
            "reasons": reasons,
            "flags": ["after_hours"] if rng.random() < 0.15 else [],
            "source": "cli_casemgmt",
            "client_event_id": f"cms-{seq:08d}",
            "policy_version": policy,
            "workstation": f"WS-{rng.randrange(40):02d}",
            "source_ip": "10.20.0.15",
            "details": {"reasons": [{"code": r, "message": f"why: {r}"} for r in reasons]},
        }
        canonical = canonical_bytes(row)
        digest = chain_hash(prev, canonical)
        row["prev_hash"], row["hash"] = prev, digest
        rows.append(row)
        leaf = leaf_hash(canonical)
        tree += [{"tile_level": level, "position": position, "hash": value,
                  "authenticator": mark(value) if level == 0 else None}
                 for level, position, value in builder.add([leaf])]  # fmt: skip
        roots.add(leaf)
        if seq % INTERVAL == 0 or seq == n:
            text_ = Note(ORIGIN, seq, roots.root()).text
            notes.append({"size": seq, "root": roots.root(), "signed_at": at,
                          "note": text_ + "\n" + note_key.signature_line(text_)})  # fmt: skip
        if seq % INTERVAL == 0:
            message = checkpoint_message(seq, digest, at, signer.key_id)
            checkpoints.append(
                {"seq": seq, "hash": digest, "signed_at": at, "key_id": signer.key_id,
                 "signature": signer.sign(message)}
            )  # fmt: skip
        prev = digest
    return rows, checkpoints, tree, notes


class _Roots:
    """The tree's root, folded leaf by leaf (the complete subtrees so far)."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []

    def add(self, leaf: bytes) -> None:
        stack, level, node = self.stack, 0, leaf
        while stack and stack[-1][0] == level:
            node = node_hash(stack.pop()[1], node)
            level += 1
        stack.append((level, node))

    def root(self) -> bytes:
        node = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            node = node_hash(left, node)
        return node


def load(url: str, built: Built, signer: Signer) -> None:
    rows, checkpoints, tree, notes = built
    engine = make_engine(url)
    key = {"key_id": signer.key_id, "public_key_pem": signer.public_key_pem,
           "created_at": datetime(2025, 10, 1, tzinfo=UTC)}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(SigningKey), [key])
        conn.execute(insert(Checkpoint), checkpoints)
        conn.execute(insert(LogSetting), [{"name": "origin", "value": ORIGIN}])
        conn.execute(insert(TreeCheckpoint), notes)
        for start in range(0, len(tree), CHUNK * 5):
            conn.execute(insert(TreeHash), tree[start : start + CHUNK * 5])
        if engine.dialect.name == "postgresql":
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([_pg_value(row[name]) for name in COLUMNS])
        else:
            for start in range(0, len(rows), CHUNK):
                conn.execute(insert(Event), rows[start : start + CHUNK])
    if engine.dialect.name == "postgresql":  # as autovacuum would have, over time
        with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def _pg_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def run_verify(url: str, key_file: Path, to_seq: int | None = None) -> dict[str, Any]:
    """`access-audit verify --json` in a subprocess: its answer, wall time and peak RSS."""
    command = [str(VENV_BIN / "access-audit"), "verify", "--json"]
    if to_seq is not None:
        command += ["--to-seq", str(to_seq)]
    env = checkout_env({**os.environ, "AUDIT_DATABASE_URL": url,
                        "AUDIT_SIGNING_KEY_FILE": str(key_file)})  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    peak_kb = 0
    while process.poll() is None:
        peak_kb = max(peak_kb, _high_water_kb(process.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    assert process.stdout is not None
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"verify failed: {output.decode()}")
    result: dict[str, Any] = json.loads(output)
    result.update(wall_seconds=wall, peak_rss_mb=peak_kb / 1024)
    return result


def _high_water_kb(pid: int) -> int:
    """The process's peak RSS so far (VmHWM). Not getrusage: on Linux a child's ru_maxrss
    includes what it had before exec, i.e. a copy of this process with the whole log."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def bare_loop(built: Built, signer: Signer) -> float:
    """Seconds for verify's checks over every row, in memory: the chain hash, the leaf hash
    and its authenticator, the root folded and compared at each checkpointed size."""
    rows, _, tree, notes = built
    marks = {r["position"]: r["authenticator"] for r in tree if r["tile_level"] == 0}
    signed = {note["size"]: note["root"] for note in notes}
    authenticator = Authenticator.of(signer.private_key)
    started = time.perf_counter()
    roots = _Roots()
    for row in rows:
        canonical = canonical_bytes(row)
        if chain_hash(row["prev_hash"], canonical) != row["hash"]:
            raise SystemExit("the bare loop disagrees with the generated log")
        leaf = leaf_hash(canonical)
        if authenticator.check(leaf, marks[row["seq"] - 1]) is not None:
            raise SystemExit("the bare loop finds a bad authenticator")
        roots.add(leaf)
        root = signed.get(row["seq"])
        if root is not None and root != roots.root():
            raise SystemExit("the bare loop finds another root")
    return time.perf_counter() - started


def _yes(value: bool) -> str:
    return "yes" if value else "NO"


def databases(urls: list[str], workdir: Path) -> Iterator[tuple[str, str]]:
    for url in urls or ["sqlite"]:
        kind = "sqlite" if url.startswith("sqlite") else "postgresql"
        with database(kind, workdir, url if kind == "postgresql" else PG_SERVER) as fresh:
            yield kind, fresh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best counts")
    parser.add_argument(
        "--database-url",
        action="append",
        default=[],
        help="sqlite (the default) or a PostgreSQL server URL; repeat to run several",
    )
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    table = Table(
        ["database", "what", "rows", "seconds", "rows/s", "ratio", "peak RSS MB", "valid"]
    )
    with tempfile.TemporaryDirectory(prefix="aa_bench_verify_") as tmp:
        workdir = Path(tmp)
        (workdir / "signing.pem").write_bytes(Signer.new_key_pem())
        signer = Signer.from_pem_file(workdir / "signing.pem")
        print(f"building a {args.events:,}-event log ...", file=sys.stderr)
        started = time.perf_counter()
        built = build_log(args.events, signer)
        rows, checkpoints = built[0], built[1]
        print(f"  built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for kind, url in databases(args.database_url, workdir):
            started = time.perf_counter()
            load(url, built, signer)
            print(f"{kind}: loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            key_file = workdir / "signing.pem"
            tenth = run_verify(url, key_file, to_seq=max(args.events // 10, 1))
            # Interleaved, best of `--repeat` each: the machine may be busy with other work.
            wholes, bares = [], []
            for _ in range(args.repeat):
                wholes.append(run_verify(url, key_file))
                bares.append(bare_loop(built, signer))
            whole = min(wholes, key=lambda run: run["seconds"])
            bare = min(bares)
            bare_rate = len(rows) / bare
            rate = whole["checked"] / whole["seconds"]
            entry = {
                "database": kind,
                "rows": len(rows),
                "checkpoints": len(checkpoints),
                "verify": whole,
                "verify_seconds_each": [run["seconds"] for run in wholes],
                "bare_seconds_each": bares,
                "load_average": os.getloadavg(),
                "verify_first_tenth": tenth,
                "verify_rows_per_second": rate,
                "verify_rows_per_second_wall": whole["checked"] / whole["wall_seconds"],
                "bare_seconds": bare,
                "bare_rows_per_second": bare_rate,
                "ratio": rate / bare_rate,
                "target": TARGET,
                "meets_target": rate / bare_rate >= TARGET and whole["valid"],
            }
            results.append(entry)
            table.add(kind, "bare loop (in memory)", len(rows), bare, bare_rate, 1.0, "", "")
            table.add(kind, "verify, whole log", whole["checked"], whole["seconds"], rate,
                      rate / bare_rate, whole["peak_rss_mb"], _yes(whole["valid"]))  # fmt: skip
            table.add(kind, "verify, first tenth", tenth["checked"], tenth["seconds"],
                      tenth["checked"] / tenth["seconds"], "", tenth["peak_rss_mb"],
                      _yes(tenth["valid"]))  # fmt: skip
    print(table.render())
    print(f"target: verify >= {TARGET} x the bare loop; memory flat between a tenth and all")
    path = write_results(
        "verify", {"machine": machine(), "events": args.events, "results": results}
    )
    print(f"wrote {path}")
    return 0 if all(r["meets_target"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
