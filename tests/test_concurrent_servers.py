"""Several server processes appending at once leave one gap-free chain that verifies.

PostgreSQL only: `access-audit serve --workers 4` really starts (four processes, one
database), many clients log in, create users and ask for decisions concurrently, and the
verifier then checks the whole log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.context import AppContext, build_context
from app.ledger.models import Event
from app.ledger.verify import verify_chain
from app.migrate import ROOT
from app.users.schemas import ClientCreate, UserCreate
from tests.conftest import PASSWORD, make_settings

CLIENTS = 12  # concurrent HTTP clients, each with an admin and an oversight login
ROUNDS = 5  # per client: each round is a login, a user created, two decisions


@dataclass
class Server:
    url: str
    context: AppContext
    client_id: str
    client_secret: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(new_database: Callable[[], str], tmp_path: Path) -> Iterator[Server]:
    """`access-audit serve --workers 4` on a fresh database with users and a client."""
    url = new_database()
    if make_url(url).get_backend_name() != "postgresql":
        pytest.skip("several server processes share one database on PostgreSQL only")
    settings = make_settings(url, tmp_path)
    context = build_context(settings)
    with context.database.transaction() as session:
        for i in range(CLIENTS):
            for name, role in ((f"admin.{i}", "admin"), (f"officer.{i}", "oversight")):
                body = UserCreate(username=name, full_name=name, roles=[role], password=PASSWORD)
                context.users.create_user(session, None, body)
        client, secret = context.users.create_client(session, None, ClientCreate(name="load test"))
    port = _free_port()
    env = {
        **os.environ,
        "AUDIT_DATABASE_URL": url,
        "AUDIT_SECRET_KEY": str(settings.secret_key),
        "AUDIT_SIGNING_KEY_FILE": str(settings.signing_key_file),
        "AUDIT_POLICY_DIR": str(ROOT / "policies"),
        "AUDIT_STATE_DIR": str(tmp_path),
        "AUDIT_ARGON2_TIME_COST": "1",
        "AUDIT_ARGON2_MEMORY_COST": "1024",
        "AUDIT_LOGIN_RATE_LIMIT": str(settings.login_rate_limit),
    }
    command = [str(Path(sys.executable).parent / "access-audit"), "serve"]
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [*command, "--workers", "4", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers go down with it
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.2)
        yield Server(base, context, client.client_id, secret)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        context.dispose()


def _token(http: httpx.Client, **form: str) -> dict[str, str]:
    response = http.post("/v1/auth/token", data=form)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.mark.slow
def test_four_workers_and_many_clients_leave_one_chain(server: Server) -> None:
    integration = {
        "grant_type": "client_credentials",
        "client_id": server.client_id,
        "client_secret": server.client_secret,
    }

    def work(i: int) -> list[int]:
        codes = []
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for round_ in range(ROUNDS):
                officer = _token(
                    http, grant_type="password", username=f"officer.{i}", password=PASSWORD
                )
                codes.append(http.get("/v1/integrity/checkpoints", headers=officer).status_code)
                admin = _token(
                    http, grant_type="password", username=f"admin.{i}", password=PASSWORD
                )
                created = http.post(
                    "/v1/users",
                    json={"username": f"user.{i}.{round_}", "full_name": "U", "roles": ["auditor"]},
                    headers=admin,
                )
                codes.append(created.status_code)
                app = _token(http, **integration)
                for n in range(2):
                    record = {"type": "detainee_case", "id": f"GRN-{i}-{n}", "facility": "greene"}
                    decision = http.post(
                        "/v1/decisions",
                        json={
                            "actor": f"sgt.unknown{i}",  # a logged denial: an append all the same
                            "action": "read_case",
                            "record": record,
                            "purpose": "records_request",
                        },
                        headers=app,
                    )
                    codes.append(decision.status_code)
        return codes

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(work, range(CLIENTS)))
    codes = [code for result in results for code in result]
    assert set(codes) == {200, 201}

    with server.context.database.reader() as session:
        report = verify_chain(session)
        logins = session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "login")
        )
        total = session.scalar(select(func.count()).select_from(Event))
    assert report.valid, report.problem
    assert report.checked == report.head_seq == total
    assert logins == CLIENTS * ROUNDS * 3


@pytest.mark.slow
def test_an_amendment_takes_effect_on_every_worker_without_a_restart(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`policy propose` sends a folder to the running service; once an oversight officer
    approves it, every worker judges by it at its next request."""
    from datetime import date, timedelta

    from app.cli import main
    from tests.conftest import decision, make_actor

    context = server.context
    with context.database.transaction() as session:
        make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"],
                   trained_on=(date.today() - timedelta(days=2)).isoformat())  # fmt: skip
    folder = tmp_path / "amended"
    (folder / "tests").mkdir(parents=True)
    for path in [*(ROOT / "policies").glob("*.toml"), *(ROOT / "policies" / "tests").glob("*")]:
        text = path.read_text().replace("window_end = 2026-09-30", "window_end = 2099-12-31")
        # The end-of-mission case moves to the new end (its actor's training with it).
        text = text.replace("at = 2026-10-01T09:00:00-05:00", "at = 2100-01-01T09:00:00-06:00")
        text = text.replace("= 2026-06-01, ", "= 2099-12-01, ").replace(
            "= 2026-06-01 }", "= 2099-12-01 }"
        )
        (folder / path.relative_to(ROOT / "policies")).write_text(text)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        app = _token(http, grant_type="client_credentials", client_id=server.client_id,
                     client_secret=server.client_secret)  # fmt: skip

        def decide(_: int) -> dict[str, object]:
            with httpx.Client(base_url=server.url, timeout=30) as own:  # its own connection
                response = own.post("/v1/decisions", json=decision(), headers=app)
                assert response.status_code == 200, response.text
                body: dict[str, object] = response.json()
                return body

        with ThreadPoolExecutor(8) as pool:
            before = list(pool.map(decide, range(24)))
        assert {b["decision"] for b in before} == {"deny"}  # the shipped window has ended
        propose = ["policy", "propose", str(folder), "--authority", "Order 99 (a test)",
                   "--url", server.url, "--username", "admin.0",
                   "--password", PASSWORD]  # fmt: skip
        assert main(propose) == 0
        version = capsys.readouterr().out.split()[1]
        officer = _token(http, grant_type="password", username="officer.0", password=PASSWORD)
        approved = http.post(f"/v1/policies/{version}/approve", headers=officer)
        assert approved.status_code == 200, approved.text
        with ThreadPoolExecutor(8) as pool:
            after = list(pool.map(decide, range(40)))
    assert {(a["decision"], a["policy_version"]) for a in after} == {("allow", version)}, after[0]
