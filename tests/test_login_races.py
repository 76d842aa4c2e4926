"""Lockout is exact under concurrency: at most five failures are ever evaluated before the
lock, whatever the number of workers and of simultaneous attempts.

Each "worker" is an app of its own on a context of its own (engine, pool, hash threads)
over one real database, as server processes are; attempts start together from many
threads. On PostgreSQL the same is done against `access-audit serve --workers 4`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.context import AppContext, build_context
from app.ledger.models import Event
from app.main import create_app
from app.users.schemas import UserCreate
from tests import test_concurrent_servers
from tests.conftest import PASSWORD, make_settings
from tests.test_concurrent_servers import Server

# The `server` fixture: `access-audit serve --workers 4` on a fresh database (PostgreSQL).
server = test_concurrent_servers.server

WORKERS = 4
WRONG = "not the password at all"
# Outcomes of attempts whose password was checked; the others were refused unchecked.
EVALUATED = {"bad_credentials", "bad_credentials_locked", "success", "inactive"}


@pytest.fixture
def workers(new_database: Callable[[], str], tmp_path: Path) -> Iterator[list[TestClient]]:
    """Four apps on one fresh database, with the user `officer.lee`."""
    url = new_database()
    settings = make_settings(url, tmp_path)
    contexts: list[AppContext] = [build_context(settings) for _ in range(WORKERS)]
    with contexts[0].database.transaction() as session:
        body = UserCreate(
            username="officer.lee", full_name="Lee", roles=["oversight"], password=PASSWORD
        )
        contexts[0].users.create_user(session, None, body)
    clients = [TestClient(create_app(context=context)) for context in contexts]
    for client in clients:
        client.__enter__()
    yield clients
    for client in clients:
        client.__exit__(None, None, None)
    for context in contexts:
        context.dispose()


def _burst(post: Callable[[int, str], int], passwords: list[str]) -> list[int]:
    """Send every password at once (a barrier releases them together); their statuses."""
    start = threading.Barrier(len(passwords))

    def attempt(i: int) -> int:
        start.wait()
        return post(i, passwords[i])

    with ThreadPoolExecutor(len(passwords)) as pool:
        return list(pool.map(attempt, range(len(passwords))))


def _outcomes(context: AppContext, username: str) -> list[str]:
    with context.database.reader() as session:
        events = session.scalars(
            select(Event).where(Event.kind == "login", Event.actor == username).order_by(Event.seq)
        )
        return [event.details["outcome"] for event in events]


def _check_exact(outcomes: list[str], threshold: int = 5) -> None:
    """Replayed in log order, no more than `threshold` failures are evaluated between a
    success and the lock, and nothing is evaluated while the account is locked."""
    failures, locked = 0, False
    for outcome in outcomes:
        if outcome in ("bad_credentials", "bad_credentials_locked"):
            assert not locked, outcomes
            failures += 1
            assert failures <= threshold, outcomes
            locked = outcome == "bad_credentials_locked"
            assert locked == (failures == threshold), outcomes
        elif outcome == "success":
            assert not locked, outcomes
            failures = 0


def _login(clients: list[TestClient]) -> Callable[[int, str], int]:
    def post(i: int, password: str) -> int:
        form = {"grant_type": "password", "username": "officer.lee", "password": password}
        return clients[i % len(clients)].post("/v1/auth/token", data=form).status_code

    return post


def _context(client: TestClient) -> AppContext:
    context: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return context


def test_forty_simultaneous_wrong_passwords_evaluate_five(workers: list[TestClient]) -> None:
    statuses = _burst(_login(workers), [WRONG] * 40)
    assert set(statuses) == {401}
    outcomes = _outcomes(_context(workers[0]), "officer.lee")
    assert len(outcomes) == 40
    evaluated = [outcome for outcome in outcomes if outcome in EVALUATED]
    assert sorted(evaluated) == ["bad_credentials"] * 4 + ["bad_credentials_locked"]
    _check_exact(outcomes)
    # Locked: the right password is refused now.
    assert _login(workers)(0, PASSWORD) == 401
    assert _outcomes(_context(workers[0]), "officer.lee")[-1] == "locked"


def test_the_right_password_in_a_burst_is_accepted_only_before_the_lock(
    workers: list[TestClient],
) -> None:
    passwords = [WRONG] * 40
    passwords[20] = PASSWORD
    statuses = _burst(_login(workers), passwords)
    outcomes = _outcomes(_context(workers[0]), "officer.lee")
    _check_exact(outcomes)
    assert statuses.count(200) == outcomes.count("success") <= 1
    assert sum(outcome in EVALUATED for outcome in outcomes) <= 10  # five, a success, five


def test_rounds_of_twenty_give_five_guesses_in_all(workers: list[TestClient]) -> None:
    for _ in range(3):
        assert set(_burst(_login(workers), [WRONG] * 20)) == {401}
    outcomes = _outcomes(_context(workers[0]), "officer.lee")
    assert len(outcomes) == 60
    assert sum(outcome in EVALUATED for outcome in outcomes) == 5
    _check_exact(outcomes)


@pytest.mark.slow
def test_four_server_processes_lock_after_five(server: Server) -> None:
    """`access-audit serve --workers 4` on PostgreSQL: one burst, and rounds after it."""

    def post(_i: int, password: str) -> int:
        form = {"grant_type": "password", "username": "officer.0", "password": password}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            return http.post("/v1/auth/token", data=form).status_code

    passwords = [WRONG] * 40
    passwords[30] = PASSWORD
    first = _burst(post, passwords)
    rounds = [status for _ in range(2) for status in _burst(post, [WRONG] * 20)]
    outcomes = _outcomes(server.context, "officer.0")
    assert len(outcomes) == 80
    _check_exact(outcomes)
    assert first.count(200) == outcomes.count("success") <= 1
    assert set(rounds) == {401}
    assert "bad_credentials_locked" in outcomes
    assert post(0, PASSWORD) == 401
