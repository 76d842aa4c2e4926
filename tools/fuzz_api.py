"""Schemathesis against the real server's /openapi.json, as every role and as nobody.

For each database asked for: a fresh database (a SQLite file; a PostgreSQL database made and
dropped here), `access-audit serve` (on PostgreSQL with several workers), an administrator
made by the command line, a small roster, an oversight officer, an auditor and an
integration client made over the admin API, and a token for each. Then, for each caller
(none, admin, oversight, auditor, integration), `schemathesis run --checks all` within a
time budget; then `access-audit verify` must find the log intact, whatever the fuzzer sent.
Exit status 1 if any run failed or the log does not verify.

    .venv/bin/python tools/fuzz_api.py [--database sqlite|postgresql|both]
                                       [--seconds-per-caller 20] [--workers 4]

CI runs it with a small budget (`.ci/run`); a longer budget finds more.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

# The benchmarks' harness: servers, databases, the roster.
from harness import (
    POLICY_DIR,
    VENV_BIN,
    bootstrap,
    cli_command,
    client_token,
    create_admin,
    database,
    free_port,
    policy_for_today,
    roster,
    server,
    server_env,
)

HOST = "127.0.0.1"
CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"
# Which checks: all of them. The fuzzer reads the statuses each operation documents, so an
# undocumented status (a 500 above all) fails `status_code_conformance`.
CHECKS = "all"


def serve_command(port: int, workers: int) -> list[str]:
    return [*cli_command(), "serve", "--host", HOST, "--port", str(port),
            "--workers", str(workers)]  # fmt: skip


def password_login(base: str, username: str, password: str) -> str:
    form = {"grant_type": "password", "username": username, "password": password}
    response = httpx.post(f"{base}/v1/auth/token", data=form, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


def officers(base: str, admin_token: str) -> dict[str, str]:
    """An oversight officer and an auditor with passwords, made over the admin API; their
    tokens by role."""
    tokens: dict[str, str] = {}
    headers = {"authorization": f"Bearer {admin_token}"}
    for role in ("oversight", "auditor"):
        username, password = f"fuzz.{role}", secrets.token_urlsafe(18)
        body = {"username": username, "full_name": f"Fuzz {role.title()}", "roles": [role],
                "facilities": [], "volunteer": False, "password": password}  # fmt: skip
        httpx.post(f"{base}/v1/users", json=body, headers=headers, timeout=30).raise_for_status()
        tokens[role] = password_login(base, username, password)
    return tokens


def fuzz(base: str, caller: str, token: str | None, seconds: int, workdir: Path) -> bool:
    command = [
        str(VENV_BIN / "schemathesis"), "--config-file", str(CONFIG), "run", f"{base}/openapi.json",
        "--checks", CHECKS, "--max-time", str(seconds), "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--request-timeout", "30",
        "--report", "junit", "--report-dir", str(workdir / f"report-{caller}"),
        "--seed", "1",
    ]  # fmt: skip
    if token:
        command += ["--header", f"Authorization: Bearer {token}"]
    print(f"== schemathesis as {caller} ({seconds} s)", flush=True)
    done = subprocess.run(command, check=False)
    print(f"== schemathesis as {caller}: exit {done.returncode}", flush=True)
    return done.returncode == 0


def verified(env: dict[str, str], workdir: Path) -> bool:
    done = subprocess.run([*cli_command(), "verify"], env=env, cwd=workdir, check=False,
                          capture_output=True, text=True)  # fmt: skip
    print(f"== access-audit verify: exit {done.returncode}\n{done.stdout.strip()}", flush=True)
    return done.returncode == 0


def run(kind: str, seconds: int, workers: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="aa-fuzz-") as tmp:
        workdir = Path(tmp)
        with database(kind, workdir) as url:
            policy_dir, _ = policy_for_today(workdir, POLICY_DIR, amend=True)
            env = server_env(url, policy_dir, workdir / "signing.pem")
            admin = create_admin(env, workdir)
            port = free_port()
            serving = serve_command(port, workers if kind == "postgresql" else 1)
            with server(serving, env, port, workdir / "server.log", workdir) as running:
                made = bootstrap(running.base, admin, roster(clerks=2, logistics=1, supervisors=1))
                admin_token = password_login(running.base, *admin)
                tokens: dict[str, str | None] = {"nobody": None, "admin": admin_token}
                tokens.update(officers(running.base, admin_token))
                tokens["integration"] = client_token(
                    running.base, made.client_id, made.client_secret
                )
                started = time.perf_counter()
                results = {
                    caller: fuzz(running.base, f"{kind}-{caller}", token, seconds, workdir)
                    for caller, token in tokens.items()
                }
                print(f"[{kind}] fuzzed for {time.perf_counter() - started:.0f} s", flush=True)
            intact = verified(env, workdir)
    failed = [caller for caller, ok in results.items() if not ok]
    print(f"[{kind}] callers that found failures: {', '.join(failed) or 'none'}; "
          f"log intact: {intact}")  # fmt: skip
    return not failed and intact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--seconds-per-caller", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4, help="server workers on PostgreSQL")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [run(kind, args.seconds_per_caller, args.workers) for kind in kinds]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
