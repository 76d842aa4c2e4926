"""One request never harms another: token requests are rate-limited per source address
(429 with Retry-After, the refusals recorded in aggregate), passwords are checked in
threads of their own so that a login flood cannot hold up decisions, and an integration
client cannot be locked out by someone who only knows its id."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.context import AppContext, build_context
from app.ledger.models import Event
from app.main import create_app
from app.users.schemas import ClientCreate
from tests.conftest import MovableClock, decision, make_settings

Served = tuple[AppContext, Callable[..., TestClient]]


@contextmanager
def served(url: str, key_dir: Path, clock: MovableClock, **settings: Any) -> Iterator[Served]:
    """A context of its own on `url` (a real engine: requests run concurrently), and a
    maker of test clients on its app, each from the address it is given."""
    context = build_context(make_settings(url, key_dir, **settings), clock=clock)
    app = create_app(context=context)
    opened: list[TestClient] = []

    def client_from(address: str = "203.0.113.7") -> TestClient:
        client = TestClient(app, client=(address, 50000))
        client.__enter__()
        opened.append(client)
        return client

    try:
        yield context, client_from
    finally:
        for client in opened:
            client.__exit__(None, None, None)
        context.dispose()


def _wrong(client: TestClient, username: str = "nobody.here") -> int:
    form = {"grant_type": "password", "username": username, "password": "wrong guess 1234"}
    return client.post("/v1/auth/token", data=form).status_code


def _login_events(context: AppContext) -> list[Event]:
    with context.database.reader() as session:
        return list(session.scalars(select(Event).where(Event.kind == "login").order_by(Event.seq)))


def _integration(context: AppContext) -> tuple[str, str]:
    with context.database.transaction() as session:
        registered, secret = context.users.create_client(
            session, None, ClientCreate(name="Case management")
        )
        return registered.client_id, secret


def test_beyond_the_limit_token_requests_get_429_with_retry_after(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    clock = MovableClock()
    clock.set(clock())
    with served(new_database(), tmp_path, clock, login_rate_limit=3) as (context, client_from):
        client_id, secret = _integration(context)
        flooder, other = client_from("203.0.113.7"), client_from("198.51.100.9")
        assert [_wrong(flooder) for _ in range(4)] == [401, 401, 401, 429]
        refused = flooder.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": client_id,
                  "client_secret": secret},
        )  # fmt: skip
        assert refused.status_code == 429
        assert refused.json() == {"detail": "too many token requests from this address"}
        assert 1 <= int(refused.headers["retry-after"]) <= 20  # one request per 20 s
        assert _wrong(other) == 401  # another address is not held back
        clock.set(clock() + timedelta(seconds=21))
        assert _wrong(flooder) == 401  # a request's worth came back
        assert _wrong(flooder) == 429
        # Only the admitted attempts are one event each; no refusal is (yet).
        assert len(_login_events(context)) == 5


def test_refusals_are_one_login_event_per_address_and_window(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    clock = MovableClock()
    clock.set(clock())
    start = clock()
    with served(new_database(), tmp_path, clock, login_rate_limit=2) as (context, client_from):
        flooder, other = client_from("203.0.113.7"), client_from("198.51.100.9")
        assert [_wrong(flooder) for _ in range(50)].count(429) == 48
        assert [_wrong(other) for _ in range(3)].count(429) == 1
        clock.set(start + timedelta(seconds=61))
        assert _wrong(other) == 401  # the next request reports the windows that ended
        events = _login_events(context)
        reports = [e for e in events if e.details["outcome"] == "rate_limited"]
        assert [(e.source_ip, e.details["count"], e.decision) for e in reports] == [
            ("203.0.113.7", 48, "deny"),
            ("198.51.100.9", 1, "deny"),
        ]
        assert len(events) == 2 + 2 + 1 + 2
        # More refusals in a new window, reported at shutdown.
        clock.set(start + timedelta(seconds=62))
        assert [_wrong(flooder) for _ in range(3)] == [401, 401, 429]
        anyio.run(context.stop)
        last = _login_events(context)[-1]
        assert (last.source_ip, last.details["outcome"], last.details["count"]) == (
            "203.0.113.7",
            "rate_limited",
            1,
        )


def test_a_client_is_not_locked_out_by_wrong_secrets(
    client: TestClient, session: Session, context: AppContext
) -> None:
    registered, secret = context.users.create_client(session, None, ClientCreate(name="Intake"))
    form = {"grant_type": "client_credentials", "client_id": registered.client_id}
    for _ in range(10):
        bad = client.post("/v1/auth/token", data={**form, "client_secret": "guessed"})
        assert bad.status_code == 401
    assert client.post("/v1/auth/token", data={**form, "client_secret": secret}).status_code == 200


def test_a_login_flood_does_not_hold_up_decisions(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    """Every password check of the flood is stuck; decisions and other requests go on."""
    clock = MovableClock()
    with served(new_database(), tmp_path, clock, login_hash_threads=1) as (context, client_from):
        client_id, secret = _integration(context)
        caller = client_from("198.51.100.9")
        got = caller.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": client_id,
                  "client_secret": secret},
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {got.json()['access_token']}"}
        stuck = threading.Event()
        check = context.logins.hasher.verify

        def stuck_check(secret: str, hashed: str | None) -> bool:
            stuck.wait(60)
            return check(secret, hashed)

        context.logins.hasher.verify = stuck_check  # type: ignore[method-assign]
        flooder = client_from("203.0.113.7")
        with ThreadPoolExecutor(60) as pool:
            flood = [pool.submit(_wrong, flooder, f"nobody.{i}") for i in range(60)]
            try:
                answered: list[int] = []

                def ask() -> None:
                    answered.append(caller.post("/v1/decisions", json=decision(),
                                                headers=headers).status_code)  # fmt: skip
                    answered.append(caller.get("/v1/auth/me", headers=headers).status_code)

                asker = threading.Thread(target=ask)
                asker.start()
                asker.join(20)
                assert answered == [200, 200]
                assert not any(attempt.done() for attempt in flood)  # all still stuck
            finally:
                stuck.set()
            assert {attempt.result() for attempt in flood} == {401}
        assert sum(e.details["outcome"] == "unknown" for e in _login_events(context)) == 60
