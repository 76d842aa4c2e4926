"""Concurrent decisions through the real app on a fresh database: grouped, none lost, and a
bad item fails alone.

Real sessions on their own connections (not the rolled-back test transaction, whose one
connection cannot serve two threads at once), as the service runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import DataError

from app.access.schemas import DecisionResult
from app.access.service import Access, Ask
from app.context import AppContext, build_context
from app.ledger.append_store import AppendStore
from app.ledger.models import Checkpoint, Event
from app.ledger.verify import verify_chain
from app.main import create_app
from app.users.schemas import ClientCreate
from tests.conftest import NOV_3_MORNING, MovableClock, decision, make_actor, make_settings

REQUESTS = 40


@pytest.fixture
def fresh(new_database: Callable[[], str], tmp_path: Path) -> Iterator[tuple[AppContext, str]]:
    """A context on a fresh database with one actor, a client's token, the clock on a
    mission morning, and a checkpoint every 7 events (so that groups complete some)."""
    url = new_database()
    clock = MovableClock()
    context = build_context(make_settings(url, tmp_path, checkpoint_interval=7), clock=clock)
    with context.database.transaction() as session:
        make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"])
        registered, _ = context.users.create_client(
            session, None, ClientCreate(name="Case management")
        )
    issued = context.tokens.issue(registered.client_id, "client")
    clock.set(NOV_3_MORNING)
    yield context, issued
    context.dispose()


def burst(
    context: AppContext, token: str, bodies: Sequence[dict[str, Any]]
) -> list[httpx.Response]:
    """POST every body to /v1/decisions at once, through the real app."""
    app = create_app(context=context)
    headers = {"Authorization": f"Bearer {token}"}

    async def send() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as http:
            return await asyncio.gather(
                *(http.post("/v1/decisions", headers=headers, json=body) for body in bodies)
            )

    with TestClient(app):
        return asyncio.run(send())


def test_concurrent_decisions_share_transactions_and_each_gets_its_own_answer(
    fresh: tuple[AppContext, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, issued = fresh
    groups: list[int] = []
    real_decide = Access.decide

    def counting(self: Access, session: Any, asks: Sequence[Ask]) -> list[DecisionResult]:
        groups.append(len(asks))
        return real_decide(self, session, asks)

    monkeypatch.setattr(Access, "decide", counting)
    actors = ["sgt.miller", "nobody.known"]  # one allowed, one denied
    responses = burst(context, issued, [
        decision(actor=actors[i % 2], client_event_id=f"burst-{i}") for i in range(REQUESTS)
    ])  # fmt: skip
    assert [r.status_code for r in responses] == [200] * REQUESTS
    bodies = [r.json() for r in responses]
    assert [b["decision"] for b in bodies] == ["allow", "deny"] * (REQUESTS // 2)
    assert len({b["seq"] for b in bodies}) == REQUESTS
    assert sum(groups) == REQUESTS  # each ask in exactly one group
    assert len(groups) < REQUESTS  # and asks that waited went together
    with context.database.reader() as session:
        logged = session.execute(
            select(Event.client_event_id, Event.seq).where(Event.kind == "decision")
        ).all()
        assert sorted(logged) == sorted((f"burst-{i}", b["seq"]) for i, b in enumerate(bodies))
        last = max(seq for _, seq in logged)
        signed = session.scalars(select(Checkpoint.seq).order_by(Checkpoint.seq)).all()
        assert signed == list(range(7, last + 1, 7))
        assert verify_chain(session).valid


def test_a_decision_that_cannot_be_written_fails_alone(
    fresh: tuple[AppContext, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Poisoned decisions in the same groups as good ones: the database refuses every row of
    a poisoned actor (as PostgreSQL refuses a NUL byte in text). Each group that holds one
    fails, and is written again ask by ask: every good decision is answered and logged,
    every poisoned one gets 503 and leaves nothing."""
    context, issued = fresh
    store = type(context.ledger.store)
    real_insert = store.insert

    def insert(
        self: AppendStore, session: Any, rows: Sequence[Any], touches: Any, tree: Any
    ) -> None:
        if any("poison" in str(row) for row in rows):
            raise DataError("INSERT INTO events", {}, Exception("invalid byte sequence"))
        real_insert(self, session, rows, touches, tree)

    monkeypatch.setattr(store, "insert", insert)
    bodies = [
        decision(actor="poison.pill" if i % 5 == 2 else "sgt.miller", client_event_id=f"mix-{i}")
        for i in range(REQUESTS)
    ]
    responses = burst(context, issued, bodies)
    poisoned = [i for i in range(REQUESTS) if i % 5 == 2]
    assert [r.status_code for i, r in enumerate(responses) if i not in poisoned] == [200] * 32
    assert [responses[i].status_code for i in poisoned] == [503] * len(poisoned)
    with context.database.reader() as session:
        logged = session.scalars(select(Event.client_event_id).where(Event.kind == "decision"))
        assert sorted(logged) == sorted(f"mix-{i}" for i in range(REQUESTS) if i not in poisoned)
        assert verify_chain(session).valid


def test_a_nul_byte_is_refused_before_it_reaches_a_group(fresh: tuple[AppContext, str]) -> None:
    """What can be checked before the group is: a name with a NUL byte (which PostgreSQL
    cannot store) is a 422 for that request alone, beside good decisions sent at once."""
    context, issued = fresh
    bodies = [
        decision(actor="sgt.\x00miller" if i % 4 == 1 else "sgt.miller") for i in range(REQUESTS)
    ]
    responses = burst(context, issued, bodies)
    codes = [r.status_code for r in responses]
    assert codes == [422 if i % 4 == 1 else 200 for i in range(REQUESTS)]
    assert responses[1].json()["detail"][0]["loc"] == ["body", "actor"]
    with context.database.reader() as session:
        count = session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "decision")
        )
        assert count == REQUESTS - REQUESTS // 4
