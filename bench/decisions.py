"""Decision throughput: POST /v1/decisions on the real server against a trivial endpoint.

For each database (a fresh SQLite file; a fresh PostgreSQL database, dropped afterwards):
migrate, create the actors and an integration client, start `access-audit serve` (one
worker) and, beside it, bench/trivial_app.py (the same request model, parsed and answered
with a constant: no auth, no database) under uvicorn with the same options. Then drive
each with C concurrent keep-alive connections and the very same requests, in rounds that
alternate the two, so that a drift of the machine's speed weighs on both alike. The ratio
is the median of the rounds' ratios. Target (issue 3): decisions/s >= 0.35 x the trivial
endpoint's.

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio streams, so that on
a small machine the client is not what limits the trivial endpoint (`--client httpx` uses
httpx.AsyncClient instead, which is several times more expensive per request).

    .venv/bin/python bench/decisions.py [--requests 10000] [--concurrency 16] [--rounds 4]
                                        [--database sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from harness import (
    HOST,
    PG_SERVER,
    POLICY_DIR,
    VENV_BIN,
    RequestMix,
    Running,
    Table,
    app_server_command,
    bootstrap,
    client_token,
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

TARGET = 0.35
PATH = "/v1/decisions"
BENCH_DIR = Path(__file__).resolve().parent


def trivial_server_command(port: int) -> list[str]:
    """bench/trivial_app.py under uvicorn with the options `access-audit serve` passes."""
    return [
        str(VENV_BIN / "uvicorn"),
        "trivial_app:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-proxy-headers",
        "--log-level",
        "info",
    ]


def decision_bodies(n: int, seed: int) -> list[bytes]:
    """N decision requests from the realistic mix, each with its own client_event_id."""
    mix = RequestMix(roster(), seed=seed)
    run = secrets.token_hex(3)
    bodies = []
    for i in range(n):
        _, body = mix.next()
        body["client_event_id"] = f"cms-{run}-{i:07d}"
        bodies.append(json.dumps(body).encode())
    return bodies


@dataclass
class Load:
    """What one measured run saw."""

    sent: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    answers: list[bytes] = field(default_factory=list)

    def add(self, other: Load) -> None:
        self.sent += other.sent
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.statuses += other.statuses
        self.answers += other.answers

    def summary(self) -> dict[str, Any]:
        decisions: Counter[str] = Counter()
        for answer in self.answers:
            try:
                decisions[json.loads(answer).get("decision", "?")] += 1
            except ValueError:
                decisions["unreadable"] += 1
        ok = self.statuses.get(200, 0)
        return {
            "requests": len(self.latencies),
            "ok": ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "seconds": self.seconds,
            "requests_per_s": ok / self.seconds if self.seconds else 0.0,
            "p50_ms": median(self.latencies) * 1000,
            "p95_ms": percentile(self.latencies, 95) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "max_ms": max(self.latencies, default=float("nan")) * 1000,
            "decisions": dict(decisions),
        }


def http_requests(port: int, token: str, bodies: list[bytes]) -> list[bytes]:
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: {HOST}:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {token}\r\n"
    )
    return [f"{head}content-length: {len(b)}\r\n\r\n".encode() + b for b in bodies]


async def drive_raw(
    port: int, token: str, bodies: list[bytes], concurrency: int, max_seconds: float
) -> Load:
    """Send every body once over `concurrency` keep-alive connections (or until time's up)."""
    requests = http_requests(port, token, bodies)
    load = Load()
    position = 0
    deadline = time.perf_counter() + max_seconds

    async def connection() -> None:
        nonlocal position
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while position < len(requests) and time.perf_counter() < deadline:
                request = requests[position]
                position += 1
                sent = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                answer = await reader.readexactly(length)
                load.latencies.append(time.perf_counter() - sent)
                load.statuses[int(head[9:12])] += 1
                load.answers.append(answer)
                if b"connection: close" in head.lower():
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    load.seconds = time.perf_counter() - started
    load.sent = position
    return load


async def drive_httpx(
    port: int, token: str, bodies: list[bytes], concurrency: int, max_seconds: float
) -> Load:
    """The same load through httpx.AsyncClient (heavier per request than the server)."""
    load = Load()
    position = 0
    deadline = time.perf_counter() + max_seconds
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", headers=headers, limits=limits, timeout=60
    ) as client:

        async def connection() -> None:
            nonlocal position
            while position < len(bodies) and time.perf_counter() < deadline:
                body = bodies[position]
                position += 1
                sent = time.perf_counter()
                response = await client.post(PATH, content=body)
                load.latencies.append(time.perf_counter() - sent)
                load.statuses[response.status_code] += 1
                load.answers.append(response.content)

        started = time.perf_counter()
        await asyncio.gather(*(connection() for _ in range(concurrency)))
        load.seconds = time.perf_counter() - started
    load.sent = position
    return load


def measure(
    servers: dict[str, tuple[Running, int]],
    token: str,
    bodies: list[bytes],
    warmup: list[bytes],
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, Any]], list[float]]:
    """Drive each server in turn, round after round, with its share of the same requests.

    Both servers run throughout (the one not driven idles), and each round drives one and
    then the other: a drift of the machine's speed over the run (seen here: the trivial
    endpoint's rate varying by a fifth from run to run) then weighs on both alike. Returns
    each server's summary over all rounds and the ratio of the first to the second in each
    round.
    """
    drive = drive_httpx if args.client == "httpx" else drive_raw
    loads = {name: Load() for name in servers}
    cpu: dict[str, float | None] = dict.fromkeys(servers, 0.0)
    for _, port in servers.values():
        asyncio.run(drive(port, token, warmup, args.concurrency, args.max_seconds))
    share = -(-len(bodies) // args.rounds)
    ratios: list[float] = []
    for start in range(0, len(bodies), share):
        chunk = bodies[start : start + share]
        rates: list[float] = []
        for name, (running, port) in servers.items():
            before = running.cpu_seconds()
            load = asyncio.run(drive(port, token, chunk, args.concurrency, args.max_seconds))
            after, spent = running.cpu_seconds(), cpu[name]
            if before is None or after is None or spent is None:
                cpu[name] = None
            else:
                cpu[name] = spent + after - before
            loads[name].add(load)
            rates.append(load.statuses.get(200, 0) / load.seconds if load.seconds else 0.0)
        ratios.append(rates[0] / rates[1] if rates[1] else 0.0)
    summaries = {}
    for name, load in loads.items():
        summary = load.summary()
        spent = cpu[name]
        summary["server_cpu_ms_per_request"] = (
            None if spent is None or not summary["requests"] else spent * 1000 / summary["requests"]
        )
        summaries[name] = summary
    return summaries, ratios


def bench_database(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    bodies = decision_bodies(args.requests + args.warmup, args.seed)
    warmup, bodies = bodies[: args.warmup], bodies[args.warmup :]
    with tempfile.TemporaryDirectory(prefix="aa-bench-decisions-") as tmp:
        workdir = Path(tmp)
        policy_dir, extended = policy_for_today(workdir, args.policy_dir, not args.shipped_policy)
        key_file = workdir / "signing.pem"
        with database(kind, workdir, args.pg_server) as url:
            client_id, secret = bootstrap(url, policy_dir, key_file, roster())
            env = server_env(url, policy_dir, key_file)
            service_port, trivial_port = free_port(), free_port()
            with (
                server(app_server_command(service_port), env, service_port,
                       workdir / "server.log", workdir) as service,
                server(trivial_server_command(trivial_port), env, trivial_port,
                       workdir / "trivial.log", workdir) as trivial,
            ):  # fmt: skip
                token = client_token(service.base, client_id, secret)
                servers = {"service": (service, service_port), "trivial": (trivial, trivial_port)}
                summaries, ratios = measure(servers, token, bodies, warmup, args)
    service_summary, trivial_summary = summaries["service"], summaries["trivial"]
    print(f"[{kind}] decisions: {service_summary['requests_per_s']:,.0f}/s, "
          f"trivial: {trivial_summary['requests_per_s']:,.0f}/s", file=sys.stderr)  # fmt: skip
    ratio = median(ratios)
    return {
        "database": kind,
        "service": service_summary,
        "trivial": trivial_summary,
        "ratio": ratio,
        "ratio_by_round": ratios,
        "target": TARGET,
        "meets_target": ratio >= TARGET and service_summary["ok"] == service_summary["requests"],
        "policy_window_extended_to": extended,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternate the two endpoints this many times"
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--pg-server", default=PG_SERVER, help="where to CREATE DATABASE")
    parser.add_argument("--policy-dir", type=Path, default=POLICY_DIR)
    parser.add_argument(
        "--shipped-policy",
        action="store_true",
        help="serve the policy as shipped even when today is past its window",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=120, help="stop each measured run after this long"
    )
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if not 1 <= args.requests <= 200_000 or not 1 <= args.concurrency <= 256:
        parser.error("--requests must be 1-200,000 and --concurrency 1-256")
    if not 1 <= args.rounds <= args.requests:
        parser.error("--rounds must be 1 to --requests")
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [bench_database(kind, args) for kind in kinds]

    table = Table(
        [
            "database",
            "endpoint",
            "requests",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "non-200",
            "ratio",
            "met",
        ]
    )
    for r in results:
        for name in ("service", "trivial"):
            m = r[name]
            is_service = name == "service"
            table.add(
                r["database"],
                PATH if is_service else "trivial",
                m["requests"],
                m["requests_per_s"],
                m["p50_ms"],
                m["p95_ms"],
                m["p99_ms"],
                m["requests"] - m["ok"],
                f"{r['ratio']:.3f}" if is_service else "",
                ("yes" if r["meets_target"] else "NO") if is_service else "",
            )
    print(table.render())
    print(
        f"target: decisions/s >= {TARGET} x trivial (ratio: median of {args.rounds} rounds "
        f"alternating the two); {args.concurrency} keep-alive connections, {args.client} client"
    )
    for r in results:
        print(f"{r['database']}: decisions {r['service']['decisions']}")
        if r["policy_window_extended_to"]:
            print(
                f"{r['database']}: served a copy of the policy with window_end "
                f"{r['policy_window_extended_to']} (today is past the shipped window)"
            )
    path = write_results(
        "decisions",
        {
            "benchmark": "decisions",
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "client": args.client,
            "machine": machine(),
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
