"""Tokens die with the credential: a password change, a deactivation (and the reactivation
after it) or a role taken away ends every earlier token of the user at once."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy.orm import Session

from app.context import AppContext
from tests.conftest import make_user, token

SECRET = "test-secret-key-that-is-long-enough-0123456789"
NEW_PASSWORD = "a brand new passphrase"


def _me(client: TestClient, headers: dict[str, str]) -> int:
    return client.get("/v1/auth/me", headers=headers).status_code


@pytest.fixture
def admin(client: TestClient, session: Session, context: AppContext) -> dict[str, str]:
    make_user(session, context, "admin.kim", ["admin"])
    return token(client, "admin.kim")


def test_a_password_change_ends_earlier_tokens(
    client: TestClient, session: Session, context: AppContext, admin: dict[str, str]
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    before = [token(client, "officer.lee"), token(client, "officer.lee")]
    patched = client.patch("/v1/users/officer.lee", json={"password": NEW_PASSWORD}, headers=admin)
    assert patched.status_code == 200
    assert [_me(client, headers) for headers in before] == [401, 401]
    after = token(client, "officer.lee", NEW_PASSWORD)
    assert _me(client, after) == 200


def test_deactivation_ends_tokens_and_reactivation_does_not_revive_them(
    client: TestClient, session: Session, context: AppContext, admin: dict[str, str]
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    before = token(client, "officer.lee")
    for active in (False, True):
        response = client.patch("/v1/users/officer.lee", json={"active": active}, headers=admin)
        assert response.status_code == 200
    assert _me(client, before) == 401
    assert _me(client, token(client, "officer.lee")) == 200


def test_a_role_taken_away_ends_tokens_a_role_given_does_not(
    client: TestClient, session: Session, context: AppContext, admin: dict[str, str]
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    headers = token(client, "officer.lee")
    client.patch("/v1/users/officer.lee", json={"full_name": "Lee, O."}, headers=admin)
    assert _me(client, headers) == 200  # nothing taken away
    client.patch("/v1/users/officer.lee", json={"roles": ["oversight", "auditor"]}, headers=admin)
    assert _me(client, headers) == 200
    client.patch("/v1/users/officer.lee", json={"roles": ["auditor"]}, headers=admin)
    assert _me(client, headers) == 401


def test_a_user_token_without_a_credential_version_is_refused(
    client: TestClient, session: Session, context: AppContext
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    now = int(context.clock().timestamp())
    claims = {"sub": "officer.lee", "typ": "user", "iat": now, "exp": now + 600}
    for extra in ({}, {"ver": "0"}, {"ver": True}, {"ver": 7}):
        forged = jwt.encode({**claims, **extra}, SECRET, algorithm="HS256")
        assert _me(client, {"Authorization": f"Bearer {forged}"}) == 401, extra
    good = jwt.encode({**claims, "ver": 0}, SECRET, algorithm="HS256")
    assert _me(client, {"Authorization": f"Bearer {good}"}) == 200


def test_a_changed_password_ends_the_token_on_the_decision_path_too(
    client: TestClient, session: Session, context: AppContext, admin: dict[str, str]
) -> None:
    """A user holding `integration` asks for decisions with a token looked up apart."""
    make_user(session, context, "bridge.user", ["integration"])
    headers = token(client, "bridge.user")
    body = {
        "actor": "sgt.nobody",
        "action": "read_case",
        "record": {"type": "detainee_case", "id": "GRN-2025-00042", "facility": "greene"},
        "purpose": "records_request",
    }
    assert client.post("/v1/decisions", json=body, headers=headers).status_code == 200
    client.patch("/v1/users/bridge.user", json={"password": NEW_PASSWORD}, headers=admin)
    assert client.post("/v1/decisions", json=body, headers=headers).status_code == 401
