"""Concurrent decisions through the real app on a fresh database: grouped, none lost.

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
from sqlalchemy import select

from app.access import service
from app.access.service import Ask
from app.context import AppContext, build_context
from app.ledger.models import Checkpoint, Event
from app.ledger.verify import verify_chain
from app.main import create_app
from app.users import service as users_service
from app.users.schemas import ClientCreate
from tests.conftest import NOV_3_MORNING, decision, fixed_clock, make_actor, make_settings

REQUESTS = 40


@pytest.fixture
def fresh(new_database: Callable[[], str], tmp_path: Path) -> Iterator[tuple[AppContext, str]]:
    """A context on a fresh database with one actor, and a client's token."""
    url = new_database()
    context = build_context(make_settings(url, tmp_path))
    with context.writer() as session, session.begin():
        make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"])
        registered, _ = users_service.create_client(
            session, context, None, ClientCreate(name="Case management")
        )
        client_id = registered.client_id
    issued = context.tokens.issue(client_id, "client", context.clock())
    yield context, issued
    context.engine.dispose()


def test_concurrent_decisions_share_transactions_and_each_gets_its_own_answer(
    fresh: tuple[AppContext, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, issued = fresh
    headers = {"Authorization": f"Bearer {issued}"}
    groups: list[int] = []
    real_decide = service.decide

    def counting(session: Any, context: AppContext, asks: Sequence[Ask]) -> Any:
        groups.append(len(asks))
        return real_decide(session, context, asks)

    monkeypatch.setattr(service, "decide", counting)
    context.clock = fixed_clock(NOV_3_MORNING)
    context.ledger.checkpoint_interval = 7  # groups complete checkpoints as they append
    actors = ["sgt.miller", "nobody.known"]  # one allowed, one denied
    app = create_app(context=context)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as http:
            return await asyncio.gather(*(
                http.post("/v1/decisions", headers=headers,
                          json=decision(actor=actors[i % 2], client_event_id=f"burst-{i}"))
                for i in range(REQUESTS)
            ))  # fmt: skip

    with TestClient(app):
        responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * REQUESTS
    bodies = [r.json() for r in responses]
    assert [b["decision"] for b in bodies] == ["allow", "deny"] * (REQUESTS // 2)
    assert len({b["seq"] for b in bodies}) == REQUESTS
    assert sum(groups) == REQUESTS  # each ask in exactly one group
    assert len(groups) < REQUESTS  # and asks that waited went together
    with context.reader() as session:
        logged = session.execute(
            select(Event.client_event_id, Event.seq).where(Event.kind == "decision")
        ).all()
        assert sorted(logged) == sorted((f"burst-{i}", b["seq"]) for i, b in enumerate(bodies))
        last = max(seq for _, seq in logged)
        signed = session.scalars(select(Checkpoint.seq).order_by(Checkpoint.seq)).all()
        assert signed == list(range(7, last + 1, 7))
        assert verify_chain(session).valid
