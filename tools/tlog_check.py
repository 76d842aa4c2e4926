"""The verifiable log checked by code nobody on the project wrote: Go's sumdb/note and
sumdb/tlog (Debian's golang-go and golang-golang-x-mod-dev) against a running server.

For each database asked for: a fresh database, `access-audit serve` (on PostgreSQL with
several workers), a small roster and an auditor made over the admin API; the published
checkpoint is kept, the log grows by some hundreds of decisions (across tile boundaries),
and once a newer checkpoint covers them `tools/tlogcheck` (Go) opens it with the served
vkey, folds the hash tiles to its root, proves random events both ways (the service's
proofs and Go's own from the tiles) and checks the consistency of the two checkpoints.
Exit status 1 if anything fails.

    .venv/bin/python tools/tlog_check.py [--database sqlite|postgresql|both] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent / "bench"))

from fuzz_api import officers, password_login, serve_command  # noqa: E402
from harness import (  # noqa: E402
    POLICY_DIR,
    bootstrap,
    client_token,
    create_admin,
    database,
    free_port,
    policy_for_today,
    roster,
    server,
    server_env,
)

GOPATH = "/usr/share/gocode"  # where Debian's golang-golang-x-mod-dev puts golang.org/x/mod
DECISIONS = 600


def build(workdir: Path) -> Path:
    """Build tools/tlogcheck with the system's Go, in GOPATH mode (no downloads)."""
    if shutil.which("go") is None or not (Path(GOPATH) / "src/golang.org/x/mod").is_dir():
        raise SystemExit("install golang-go and golang-golang-x-mod-dev first (apt-get)")
    binary = workdir / "tlogcheck"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH,
           "GOCACHE": str(workdir / "gocache")}  # fmt: skip
    subprocess.run(["go", "build", "-o", str(binary), "./tlogcheck"],
                   env=env, check=True, cwd=TOOLS)  # fmt: skip
    return binary


def checkpoint_size(note: str) -> int:
    return int(note.split("\n")[1])


def wait_for_checkpoint(base: str, size: int) -> str:
    """The served checkpoint once it covers `size` events (it follows within seconds)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        note = httpx.get(f"{base}/v1/log/checkpoint", timeout=10).text
        if checkpoint_size(note) >= size:
            return note
        time.sleep(0.2)
    raise SystemExit(f"no checkpoint covered {size} events within 30 s")


def head(base: str, token: str) -> int:
    response = httpx.get(f"{base}/v1/integrity/verify", timeout=60,
                         headers={"authorization": f"Bearer {token}"})  # fmt: skip
    response.raise_for_status()
    return int(response.json()["head_seq"])


def run(kind: str, workers: int, binary: Path) -> bool:
    with tempfile.TemporaryDirectory(prefix="aa-tlog-") as tmp:
        workdir = Path(tmp)
        with database(kind, workdir) as url:
            policy_dir, _ = policy_for_today(workdir, POLICY_DIR, amend=True)
            env = server_env(url, policy_dir, workdir / "signing.pem")
            admin = create_admin(env, workdir)
            port = free_port()
            serving = serve_command(port, workers if kind == "postgresql" else 1)
            with server(serving, env, port, workdir / "server.log", workdir) as running:
                base = running.base
                made = bootstrap(base, admin, roster(clerks=3, logistics=1, supervisors=1))
                auditor = officers(base, password_login(base, *admin))["auditor"]
                old = wait_for_checkpoint(base, head(base, auditor))
                (workdir / "old.note").write_text(old)
                integration = client_token(base, made.client_id, made.client_secret)
                with httpx.Client(base_url=base, timeout=30) as http:
                    http.headers["authorization"] = f"Bearer {integration}"
                    for i in range(DECISIONS):
                        body = {"actor": "unknown.person", "action": "read_case",
                                "purpose": "case_update", "client_event_id": f"tlog-{i}",
                                "record": {"type": "detainee_case", "id": f"GRN-{i}",
                                           "facility": "greene"}}  # fmt: skip
                        http.post("/v1/decisions", json=body).raise_for_status()
                wait_for_checkpoint(base, head(base, auditor))
                done = subprocess.run(
                    [str(binary), "-url", base, "-token", auditor,
                     "-old", str(workdir / "old.note")],
                    check=False,
                )  # fmt: skip
    print(f"[{kind}] Go's sumdb/tlog check: {'passed' if done.returncode == 0 else 'FAILED'}")
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--workers", type=int, default=4, help="server workers on PostgreSQL")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    with tempfile.TemporaryDirectory(prefix="aa-go-") as tmp:
        binary = build(Path(tmp))
        results = [run(kind, args.workers, binary) for kind in kinds]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
