"""POST /v1/auth/token, bearer tokens, lockout, forged tokens, deactivation."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.tokens import TokenClaims, TokenService
from app.clock import utcnow
from app.context import AppContext
from app.errors import Unauthorized
from app.ledger.models import Event
from app.users.schemas import ClientCreate
from tests.conftest import PASSWORD, MovableClock, make_user, token

SECRET = "test-secret-key-that-is-long-enough-0123456789"


def login(client: TestClient, username: str, password: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )


def test_password_grant_returns_a_bearer_token(
    client: TestClient, session: Session, context: AppContext
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    response = login(client, "officer.lee", PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {"kind": "user", "name": "officer.lee", "roles": ["oversight"]}


def test_every_credential_failure_is_the_same_401(
    client: TestClient, session: Session, context: AppContext
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    inactive = make_user(session, context, "gone.user", ["oversight"])
    inactive.active = False
    make_user(session, context, "no.password", ["oversight"], password=None)
    session.flush()
    failures = [
        login(client, "officer.lee", "wrong password!!"),
        login(client, "nobody.here", PASSWORD),
        login(client, "gone.user", PASSWORD),
        login(client, "no.password", PASSWORD),
        login(client, "officer.lee", ""),
    ]
    assert {r.status_code for r in failures} == {401}
    assert len({r.text for r in failures}) == 1
    assert failures[0].headers["www-authenticate"] == "Bearer"


def test_logins_are_audit_events_both_ways(
    client: TestClient, session: Session, context: AppContext
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    login(client, "officer.lee", "wrong password!!")
    login(client, "officer.lee", PASSWORD)
    events = session.scalars(select(Event).where(Event.kind == "login")).all()
    assert [(e.actor, e.decision, e.details["outcome"]) for e in events][-2:] == [
        ("officer.lee", "deny", "bad_credentials"),
        ("officer.lee", "allow", "success"),
    ]
    assert all(PASSWORD not in json.dumps(e.details) for e in events)


def test_five_failures_lock_the_account_for_fifteen_minutes(
    client: TestClient, session: Session, context: AppContext, clock: MovableClock
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    start = clock()
    clock.set(start)
    for _ in range(4):
        assert login(client, "officer.lee", "wrong password!!").status_code == 401
    assert login(client, "officer.lee", PASSWORD).status_code == 200  # 4 do not lock
    for _ in range(5):
        assert login(client, "officer.lee", "wrong password!!").status_code == 401
    locked = login(client, "officer.lee", PASSWORD)
    assert locked.status_code == 401
    assert locked.json() == {"detail": "invalid credentials"}
    clock.set(start + timedelta(minutes=14))
    assert login(client, "officer.lee", PASSWORD).status_code == 401
    clock.set(start + timedelta(minutes=16))
    assert login(client, "officer.lee", PASSWORD).status_code == 200
    outcomes = [
        e.details["outcome"]
        for e in session.scalars(select(Event).where(Event.kind == "login").order_by(Event.seq))
    ]
    assert outcomes[-3:] == ["locked", "locked", "success"]
    assert "bad_credentials_locked" in outcomes


def test_client_credentials_grant(
    client: TestClient, session: Session, context: AppContext
) -> None:
    app_client, secret = context.users.create_client(
        session, None, ClientCreate(name="Greene intake")
    )
    ok = client.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app_client.client_id,
            "client_secret": secret,
        },
    )
    assert ok.status_code == 200
    headers = {"Authorization": f"Bearer {ok.json()['access_token']}"}
    assert client.get("/v1/auth/me", headers=headers).json()["roles"] == ["integration"]
    bad = client.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app_client.client_id,
            "client_secret": secret + "x",
        },
    )
    assert bad.status_code == 401
    assert bad.json() == {"detail": "invalid credentials"}


def test_unknown_grant_type_is_422(client: TestClient) -> None:
    response = client.post("/v1/auth/token", data={"grant_type": "implicit"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "grant_type"]


def _forge(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    return str(jwt.encode(claims, key, algorithm=alg))


def test_forged_and_broken_tokens_are_401(
    client: TestClient, session: Session, context: AppContext
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    good = token(client, "officer.lee")["Authorization"].split()[1]
    now = int(context.clock().timestamp())
    claims = {"sub": "officer.lee", "typ": "user", "iat": now, "exp": now + 600}

    def b64(part: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()

    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    cases = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "alg none signed": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}",
        "flipped signature": f"{header}.{payload}.{flipped}",
        "expired": _forge({**claims, "iat": now - 2000, "exp": now - 1000}),
        "wrong key": _forge(claims, key="another-key-that-is-long-enough-0123456789"),
        "other algorithm": _forge(claims, alg="HS512"),
        "garbage": "not.a.token",
        "unknown subject": _forge({**claims, "sub": "nobody"}),
        "bad kind": _forge({**claims, "typ": "robot"}),
    }
    for name, forged in cases.items():
        response = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401, name
    assert client.get("/v1/auth/me").status_code == 401
    assert client.get("/v1/auth/me", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_deactivation_stops_existing_tokens_at_once(
    client: TestClient, session: Session, context: AppContext
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    make_user(session, context, "admin.kim", ["admin"])
    headers = token(client, "officer.lee")
    admin = token(client, "admin.kim")
    assert client.get("/v1/auth/me", headers=headers).status_code == 200
    assert (
        client.patch("/v1/users/officer.lee", json={"active": False}, headers=admin).status_code
        == 200
    )
    assert client.get("/v1/auth/me", headers=headers).status_code == 401


def test_role_change_applies_to_existing_tokens(
    client: TestClient, session: Session, context: AppContext
) -> None:
    """Roles are read on every request: one given is held at once, one taken away ends the
    token (`test_credentials.py`)."""
    make_user(session, context, "officer.lee", ["oversight"])
    make_user(session, context, "admin.kim", ["admin"])
    headers = token(client, "officer.lee")
    assert client.get("/v1/reports/flags", headers=headers).status_code == 200
    assert client.get("/v1/users", headers=headers).status_code == 403
    client.patch(
        "/v1/users/officer.lee",
        json={"roles": ["oversight", "auditor"]},
        headers=token(client, "admin.kim"),
    )
    assert client.get("/v1/auth/me", headers=headers).json()["roles"] == ["auditor", "oversight"]
    client.patch(
        "/v1/users/officer.lee", json={"roles": ["auditor"]}, headers=token(client, "admin.kim")
    )
    assert client.get("/v1/auth/me", headers=headers).status_code == 401


def test_deactivated_client_token_stops(
    client: TestClient, session: Session, context: AppContext
) -> None:
    app_client, secret = context.users.create_client(
        session, None, ClientCreate(name="Greene intake")
    )
    make_user(session, context, "admin.kim", ["admin"])
    ok = client.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app_client.client_id,
            "client_secret": secret,
        },
    )
    headers = {"Authorization": f"Bearer {ok.json()['access_token']}"}
    assert client.get("/v1/auth/me", headers=headers).status_code == 200
    response = client.patch(
        f"/v1/clients/{app_client.client_id}",
        json={"active": False},
        headers=token(client, "admin.kim"),
    )
    assert response.status_code == 200
    assert client.get("/v1/auth/me", headers=headers).status_code == 401


def test_a_remembered_token_still_expires() -> None:
    clock = MovableClock()
    clock.set(datetime.now(UTC))
    tokens = TokenService(SECRET, "HS256", 60, clock)
    issued = tokens.issue("officer.lee", "user", 0)
    assert tokens.read(issued) == TokenClaims("officer.lee", "user", 0)
    assert tokens.read(issued) == TokenClaims("officer.lee", "user", 0)  # remembered
    clock.set(clock() + timedelta(seconds=61))
    with pytest.raises(Unauthorized):
        tokens.read(issued)


def test_a_token_without_expiry_is_refused() -> None:
    forever = jwt.encode({"sub": "officer.lee", "typ": "user"}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        TokenService(SECRET, "HS256", 60, utcnow).read(forever)
