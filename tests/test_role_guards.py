"""Every /v1 endpoint: no token → 401, a token without the needed role → 403.

The table below must list every /v1 route of the app (checked), so a new endpoint cannot
ship without its guard being tested.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.vocabulary import Role

ALL = {r.value for r in Role}
READERS = {"oversight", "auditor"}

# (method, path, roles allowed)
GUARDED: list[tuple[str, str, set[str]]] = [
    ("GET", "/v1/auth/me", ALL),
    ("POST", "/v1/users", {"admin"}),
    ("GET", "/v1/users", {"admin"}),
    ("GET", "/v1/users/{username}", {"admin"}),
    ("PATCH", "/v1/users/{username}", {"admin"}),
    ("POST", "/v1/users/{username}/training", {"admin"}),
    ("POST", "/v1/clients", {"admin"}),
    ("GET", "/v1/clients", {"admin"}),
    ("PATCH", "/v1/clients/{client_id}", {"admin"}),
    ("GET", "/v1/integrity/verify", READERS),
    ("GET", "/v1/integrity/checkpoints", READERS),
    ("POST", "/v1/integrity/checkpoints", {"auditor"}),
    ("GET", "/v1/integrity/public-key", READERS),
    ("GET", "/v1/integrity/public-keys", READERS),
    ("POST", "/v1/decisions", {"integration"}),
    ("POST", "/v1/events", {"integration"}),
    ("GET", "/v1/events", READERS),
    ("GET", "/v1/events/{seq}", READERS),
    ("GET", "/v1/records/{record_type}/{record_id}/accesses", READERS),
    ("GET", "/v1/reports/summary", READERS),
    ("GET", "/v1/reports/denials", READERS),
    ("GET", "/v1/reports/flags", READERS),
    ("GET", "/v1/reports/transparency", {"oversight"}),
    ("POST", "/v1/events/{seq}/reviews", {"oversight"}),
    ("GET", "/v1/events/{seq}/reviews", READERS),
    ("GET", "/v1/exports/events.csv", {"auditor"}),
    ("GET", "/v1/exports/summary.csv", {"auditor"}),
    ("GET", "/v1/exports/{export_id}/manifest", {"auditor"}),
    ("GET", "/v1/exports/{export_id}/proofs", {"auditor"}),
    ("GET", "/v1/log/tile/entries/{rest}", READERS),
    ("GET", "/v1/log/proof/inclusion", READERS),
    ("GET", "/v1/events/{seq}/proof", READERS),
    ("GET", "/v1/policies", READERS | {"admin"}),
    ("POST", "/v1/policies", {"admin"}),
    ("GET", "/v1/policies/{version}", READERS | {"admin"}),
    ("GET", "/v1/policies/{version}/diff", READERS | {"admin"}),
    ("POST", "/v1/policies/{version}/approve", {"oversight"}),
    ("POST", "/v1/policies/{version}/reject", {"oversight"}),
    ("GET", "/v1/policies/{version}/impact", READERS),
]
# Hashes only, for anyone (contract section 13).
PUBLIC = {
    ("POST", "/v1/auth/token"),
    ("GET", "/v1/log/checkpoint"),
    ("GET", "/v1/log/key"),
    ("GET", "/v1/log/tile/{level}/{rest}"),
    ("GET", "/v1/log/proof/consistency"),
}


def _concrete(path: str) -> str:
    return (
        path.replace("{username}", "someone")
        .replace("{client_id}", "cli_x")
        .replace("{seq}", "1")
        .replace("{record_type}", "detainee_case")
        .replace("{record_id}", "GRN-1")
        .replace("{export_id}", "x")
        .replace("{rest}", "000")
        .replace("{version}", "sha256:" + "0" * 64)
    )


def test_the_table_covers_every_v1_route() -> None:
    paths = create_app().openapi()["paths"]
    routes = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    }
    assert routes == {(m, p) for m, p, _ in GUARDED} | PUBLIC


@pytest.mark.parametrize(
    ("method", "path", "allowed"), GUARDED, ids=[f"{m} {p}" for m, p, _ in GUARDED]
)
def test_wrong_role_gets_403_and_no_token_401(
    client: TestClient,
    as_role: Callable[[str], dict[str, str]],
    method: str,
    path: str,
    allowed: set[str],
) -> None:
    url = _concrete(path)
    assert client.request(method, url, json={}).status_code == 401
    for role in sorted(ALL - allowed):
        response = client.request(method, url, json={}, headers=as_role(role))
        assert response.status_code == 403, role
        assert "requires one of the roles" in response.json()["detail"]
    for role in sorted(allowed):
        response = client.request(method, url, json={}, headers=as_role(role))
        assert response.status_code not in (401, 403), role
