"""Request size and the bearer gate (contract section 15): a body over
AUDIT_MAX_BODY_BYTES is 413 before it is parsed, and a request to a route that needs a
token, without a valid one, is 401 from its headers alone: its body is never read."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.context import AppContext
from app.db import read_session, write_session
from app.ledger.models import Event
from app.main import create_app
from tests.conftest import decision

LIMIT = 2048


@pytest.fixture
def small(context: AppContext) -> AppContext:
    """The test's context with a body limit of LIMIT bytes."""
    settings = context.settings.model_copy(update={"max_body_bytes": LIMIT})
    return dataclasses.replace(context, settings=settings)


@pytest.fixture
def app(small: AppContext, session: Session) -> FastAPI:
    app = create_app(context=small)

    def test_session() -> Iterator[Session]:
        session.commit()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise

    app.dependency_overrides[read_session] = test_session
    app.dependency_overrides[write_session] = test_session
    return app


@pytest.fixture
def limited(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def events_logged(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Event)) or 0


class Exchange:
    """One request straight through the ASGI app, recording every `receive` it makes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.reads = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    def run(self, method: str, path: str, headers: dict[str, str], body: bytes = b"{}") -> Exchange:
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            self.reads += 1
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                self.body += message.get("body", b"")

        anyio.run(self.app, scope, receive, send)
        return self

    def json(self) -> Any:
        return json.loads(self.body)


# --- size -----------------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_413_unread(
    app: FastAPI, limited: TestClient, integration: dict[str, str]
) -> None:
    sent = Exchange(app).run(
        "POST", "/v1/decisions",
        {**integration, "content-type": "application/json", "content-length": str(LIMIT + 1)},
    )  # fmt: skip
    assert sent.status == 413
    assert sent.reads == 0
    assert sent.json() == {"detail": f"the request body is larger than {LIMIT} bytes"}
    assert sent.headers["content-type"] == "application/json"


def test_a_declared_length_over_the_limit_is_413_even_without_a_token(app: FastAPI) -> None:
    sent = Exchange(app).run("POST", "/v1/auth/token", {"content-length": "200000000"})
    assert sent.status == 413
    assert sent.reads == 0


def test_a_streamed_body_over_the_limit_is_413_and_nothing_is_logged(
    limited: TestClient, integration: dict[str, str], session: Session
) -> None:
    before = events_logged(session)

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"events": ['
        for _ in range(LIMIT // 64 + 1):
            yield b" " * 64
        yield b"]}"

    response = limited.post(
        "/v1/events",
        content=chunks(),
        headers={**integration, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": f"the request body is larger than {LIMIT} bytes"}
    assert events_logged(session) == before


def test_a_body_within_the_limit_goes_through(
    limited: TestClient, integration: dict[str, str]
) -> None:
    body = decision(record={"type": "detainee_case", "id": "X-1", "facility": "greene"})
    assert len(json.dumps(body)) < LIMIT
    response = limited.post("/v1/decisions", json=body, headers=integration)
    assert response.status_code == 200, response.text


def test_the_default_limit_is_4_mib(context: AppContext) -> None:
    from app.config import Settings

    assert Settings.model_fields["max_body_bytes"].default == 4 * 1024 * 1024


# --- the bearer gate ------------------------------------------------------------------------

GUARDED = [
    ("POST", "/v1/decisions"),
    ("POST", "/v1/events"),
    ("POST", "/v1/users"),
    ("PATCH", "/v1/users/someone"),
    ("POST", "/v1/events/1/reviews"),
    ("POST", "/v1/integrity/checkpoints"),
    ("GET", "/v1/auth/me"),
    ("GET", "/v1/integrity/public-key"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer "]
)
def test_no_valid_token_is_401_before_the_body_is_read(
    app: FastAPI, method: str, path: str, authorization: str | None
) -> None:
    headers = {"content-type": "application/json", "content-length": "2"}
    if authorization is not None:
        headers["authorization"] = authorization
    sent = Exchange(app).run(method, path, headers)
    assert sent.status == 401
    assert sent.reads == 0
    assert sent.headers["www-authenticate"] == "Bearer"
    assert set(sent.json()) == {"detail"}


def test_an_expired_token_is_401_before_the_body_is_read(
    app: FastAPI, limited: TestClient, small: AppContext, integration: dict[str, str]
) -> None:
    clock: Any = small.clock
    clock.set(small.clock() + timedelta(seconds=small.settings.token_ttl_seconds + 1))
    sent = Exchange(app).run("POST", "/v1/decisions", {**integration, "content-length": "2"})
    assert sent.status == 401
    assert sent.reads == 0
    assert sent.json() == {"detail": "invalid or expired token"}


def test_a_token_signed_with_another_key_is_401_unread(app: FastAPI, small: AppContext) -> None:
    from app.auth.tokens import TokenService

    forged = TokenService(
        "another-secret-that-is-long-enough-0123456789", "HS256", 900, small.clock
    )
    headers = {"authorization": f"Bearer {forged.issue('admin', 'user')}", "content-length": "2"}
    sent = Exchange(app).run("POST", "/v1/users", headers)
    assert sent.status == 401
    assert sent.reads == 0


def test_a_valid_token_goes_on_to_the_route(
    app: FastAPI, limited: TestClient, integration: dict[str, str]
) -> None:
    body = json.dumps(decision()).encode()
    sent = Exchange(app).run(
        "POST", "/v1/decisions",
        {**integration, "content-type": "application/json", "content-length": str(len(body))},
        body,
    )  # fmt: skip
    assert sent.reads >= 1
    assert sent.status == 200, sent.body


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
     ("GET", "/docs"), ("GET", "/dashboard"), ("GET", "/dashboard/static/dashboard.js")],
)  # fmt: skip
def test_public_routes_need_no_token(limited: TestClient, method: str, path: str) -> None:
    assert limited.request(method, path).status_code == 200


def test_the_token_endpoint_reads_its_body_without_a_token(limited: TestClient) -> None:
    response = limited.post(
        "/v1/auth/token", data={"grant_type": "password", "username": "x", "password": "y"}
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid credentials"}


def test_gated_answers_are_counted_by_route(limited: TestClient) -> None:
    limited.post("/v1/decisions", json={})
    text = limited.get("/metrics").text
    assert 'route="/v1/decisions",status="401"' in text
