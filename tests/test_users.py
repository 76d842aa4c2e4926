"""Users, training records and clients: every validation of contract section 4."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.models import Event

Headers = Callable[[str], dict[str, str]]

CLERK = {
    "username": "sgt.miller",
    "full_name": "Sgt. Dana Miller",
    "roles": ["guard_clerk"],
    "facilities": ["greene"],
    "volunteer": True,
}


@pytest.fixture
def admin(as_role: Headers) -> dict[str, str]:
    return as_role("admin")


def test_create_user(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post("/v1/users", json={**CLERK, "password": "long enough pw"}, headers=admin)
    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "sgt.miller"
    assert body["roles"] == ["guard_clerk"]
    assert body["facilities"] == ["greene"]
    assert body["volunteer"] is True
    assert body["active"] is True
    assert body["can_log_in"] is True
    assert "password" not in body
    assert "password_hash" not in body
    assert client.get("/v1/users/sgt.miller", headers=admin).json()["full_name"] == (
        "Sgt. Dana Miller"
    )


def test_user_without_password_is_an_actor_only(client: TestClient, admin: dict[str, str]) -> None:
    body = client.post("/v1/users", json=CLERK, headers=admin).json()
    assert body["can_log_in"] is False


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"roles": ["guard_clerk", "general"]}, ["body", "roles", 1]),
        ({"facilities": ["greene", "atlantis"]}, ["body", "facilities", 1]),
        ({"password": "short"}, ["body", "password"]),
        ({"roles": ["admin", "auditor"]}, ["body", "roles"]),
        ({"roles": ["admin", "oversight"]}, ["body", "roles"]),
        ({"roles": ["guard_clerk", "ice_officer"]}, ["body", "roles"]),
        ({"roles": []}, ["body", "roles"]),
        ({"username": "Bad Name!"}, ["body", "username"]),
        ({"surprise": 1}, ["body", "surprise"]),
    ],
)
def test_create_user_validation_is_422_naming_the_field(
    client: TestClient, admin: dict[str, str], change: dict[str, object], loc: list[object]
) -> None:
    response = client.post("/v1/users", json={**CLERK, **change}, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert client.get("/v1/users/sgt.miller", headers=admin).status_code == 404


def test_duplicate_username_is_409(client: TestClient, admin: dict[str, str]) -> None:
    assert client.post("/v1/users", json=CLERK, headers=admin).status_code == 201
    response = client.post("/v1/users", json=CLERK, headers=admin)
    assert response.status_code == 409
    assert "taken" in response.json()["detail"]


def test_patch_user(client: TestClient, admin: dict[str, str]) -> None:
    client.post("/v1/users", json=CLERK, headers=admin)
    response = client.patch(
        "/v1/users/sgt.miller",
        headers=admin,
        json={
            "roles": ["guard_supervisor"],
            "facilities": ["greene", "phelps"],
            "volunteer": False,
            "password": "a new long password",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["roles"] == ["guard_supervisor"]
    assert body["facilities"] == ["greene", "phelps"]
    assert body["volunteer"] is False
    assert body["can_log_in"] is True


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"roles": ["nobody"]}, ["body", "roles", 0]),
        ({"roles": ["guard_clerk", "ice_officer"]}, ["body", "roles"]),
        ({"facilities": ["atlantis"]}, ["body", "facilities", 0]),
        ({"password": "short"}, ["body", "password"]),
        ({"username": "renamed"}, ["body", "username"]),
    ],
)
def test_patch_validation_is_422(
    client: TestClient, admin: dict[str, str], change: dict[str, object], loc: list[object]
) -> None:
    client.post("/v1/users", json=CLERK, headers=admin)
    response = client.patch("/v1/users/sgt.miller", json=change, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_unknown_user_is_404(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get("/v1/users/nobody", headers=admin).status_code == 404
    assert (
        client.patch("/v1/users/nobody", json={"active": False}, headers=admin).status_code == 404
    )
    assert (
        client.post(
            "/v1/users/nobody/training",
            headers=admin,
            json={"module": "data_handling", "completed_on": "2025-09-01"},
        ).status_code
        == 404
    )


def test_users_are_never_deleted(client: TestClient, admin: dict[str, str]) -> None:
    client.post("/v1/users", json=CLERK, headers=admin)
    assert client.delete("/v1/users/sgt.miller", headers=admin).status_code == 405
    client.patch("/v1/users/sgt.miller", json={"active": False}, headers=admin)
    assert client.get("/v1/users/sgt.miller", headers=admin).json()["active"] is False


def test_training_defaults_expiry_to_module_validity(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/v1/users", json=CLERK, headers=admin)
    response = client.post(
        "/v1/users/sgt.miller/training",
        headers=admin,
        json={"module": "data_handling", "completed_on": "2025-09-20"},
    )
    assert response.status_code == 201
    assert response.json()["expires_on"] == "2026-09-20"
    explicit = client.post(
        "/v1/users/sgt.miller/training",
        headers=admin,
        json={"module": "evidence_chain", "completed_on": "2025-09-20", "expires_on": "2026-01-31"},
    )
    assert explicit.json()["expires_on"] == "2026-01-31"
    modules = [
        t["module"] for t in client.get("/v1/users/sgt.miller", headers=admin).json()["training"]
    ]
    assert sorted(modules) == ["data_handling", "evidence_chain"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"module": "basket_weaving", "completed_on": "2025-09-20"}, ["body", "module"]),
        (
            {"module": "data_handling", "completed_on": "2025-09-20", "expires_on": "2025-01-01"},
            ["body", "expires_on"],
        ),
        ({"module": "data_handling", "completed_on": "2999-01-01"}, ["body", "completed_on"]),
        ({"module": "data_handling", "completed_on": "last tuesday"}, ["body", "completed_on"]),
    ],
)
def test_training_validation(
    client: TestClient, admin: dict[str, str], body: dict[str, str], loc: list[str]
) -> None:
    client.post("/v1/users", json=CLERK, headers=admin)
    response = client.post("/v1/users/sgt.miller/training", headers=admin, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_client_secret_is_shown_once_and_stored_hashed(
    client: TestClient, admin: dict[str, str], session: Session
) -> None:
    response = client.post("/v1/clients", json={"name": "Greene intake"}, headers=admin)
    assert response.status_code == 201
    created = response.json()
    assert set(created) == {"client_id", "client_secret", "name"}
    listed = client.get("/v1/clients", headers=admin).json()
    assert [c["client_id"] for c in listed] == [created["client_id"]]
    assert "client_secret" not in listed[0]
    from app.users.models import Client

    stored = session.scalar(select(Client).where(Client.client_id == created["client_id"]))
    assert stored is not None
    assert created["client_secret"] not in stored.secret_hash
    assert stored.secret_hash.startswith("$argon2")


def test_list_users_pages(client: TestClient, admin: dict[str, str]) -> None:
    for name in ("a.one", "b.two", "c.three"):
        client.post("/v1/users", json={**CLERK, "username": name}, headers=admin)
    first = client.get("/v1/users?limit=2", headers=admin).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    rest = client.get(f"/v1/users?limit=2&cursor={first['next_cursor']}", headers=admin).json()
    names = [u["username"] for u in first["items"] + rest["items"]]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert {"a.one", "b.two", "c.three"} <= set(names)


def test_every_admin_change_is_an_audit_event_naming_who_and_what(
    client: TestClient, admin: dict[str, str], session: Session
) -> None:
    me = client.get("/v1/auth/me", headers=admin).json()["name"]
    client.post("/v1/users", json={**CLERK, "password": "long enough pw"}, headers=admin)
    client.patch(
        "/v1/users/sgt.miller",
        json={"facilities": ["phelps"], "password": "another long pw"},
        headers=admin,
    )
    client.post(
        "/v1/users/sgt.miller/training",
        headers=admin,
        json={"module": "data_handling", "completed_on": "2025-09-20"},
    )
    created = client.post("/v1/clients", json={"name": "Supply tracker"}, headers=admin).json()
    events = session.scalars(
        select(Event).where(Event.kind == "admin", Event.actor == me).order_by(Event.seq)
    ).all()
    assert [(e.action, e.record_id) for e in events] == [
        ("create_user", "sgt.miller"),
        ("update_user", "sgt.miller"),
        ("add_training", "sgt.miller"),
        ("create_client", created["client_id"]),
    ]
    assert events[1].details["changes"]["facilities"] == {"from": ["greene"], "to": ["phelps"]}
    assert events[1].details["changes"]["password"] == "changed"
    for event in events:
        text = str(event.details)
        assert "long enough pw" not in text
        assert "another long pw" not in text
        assert created["client_secret"] not in text


def test_failed_change_appends_nothing(
    client: TestClient, admin: dict[str, str], session: Session, context: AppContext
) -> None:
    before = session.scalar(select(Event.seq).order_by(Event.seq.desc()).limit(1))
    client.post("/v1/users", json={**CLERK, "roles": ["admin", "auditor"]}, headers=admin)
    after = session.scalar(select(Event.seq).order_by(Event.seq.desc()).limit(1))
    assert after == before
