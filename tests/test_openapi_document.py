"""The OpenAPI document lists 401, 403, 413, 422 and 429 where they can happen, error bodies
as JSON, and both OAuth2 flows (contract section 15); a 405 names the path's real methods."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.context import AppContext
from app.users.schemas import ClientCreate

# No token needed: operations, the token endpoint, and the verifiable log's hashes.
PUBLIC = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("post", "/v1/auth/token"),
          ("get", "/v1/log/checkpoint"), ("get", "/v1/log/key"),
          ("get", "/v1/log/tile/{level}/{rest}"), ("get", "/v1/log/proof/consistency")}  # fmt: skip
PROBLEM = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_one_oauth2_scheme_with_both_flows(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert list(schemes) == ["OAuth2"]
    flows = schemes["OAuth2"]["flows"]
    assert flows["password"]["tokenUrl"] == "/v1/auth/token"
    assert flows["clientCredentials"]["tokenUrl"] == "/v1/auth/token"


def test_guarded_operations_say_401_and_public_ones_need_no_token(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        if (method, path) in PUBLIC:
            assert "security" not in operation, (method, path)
            continue
        assert operation["security"] == [{"OAuth2": []}], (method, path)
        unauthorized = operation["responses"]["401"]
        assert unauthorized["content"]["application/json"]["schema"] == PROBLEM
        assert "WWW-Authenticate" in unauthorized["headers"]


def test_403_on_every_route_behind_a_role(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        if (method, path) in PUBLIC or path == "/v1/auth/me":
            assert "403" not in operation["responses"], (method, path)
        else:
            assert "403" in operation["responses"], (method, path)
    users = document["paths"]["/v1/users"]["post"]["responses"]["403"]
    assert "admin" in users["description"]


def test_413_on_bodies_422_on_inputs_429_on_the_token_endpoint(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        assert ("413" in responses) == ("requestBody" in operation), (method, path)
        has_inputs = "requestBody" in operation or bool(operation.get("parameters"))
        assert ("422" in responses) == has_inputs, (method, path)
    assert "429" in document["paths"]["/v1/auth/token"]["post"]["responses"]


def test_every_422_is_documented_as_the_list_of_problems_it_is(
    document: dict[str, Any],
) -> None:
    # Every 422 body is `{"detail": [{loc, msg, type}, ...]}`, whether FastAPI or the rules
    # refused the input; a route that documents `Problem` (a string) would mislead clients.
    validation = {"$ref": "#/components/schemas/HTTPValidationError"}
    for method, path, operation in operations(document):
        unprocessable = operation["responses"].get("422")
        if unprocessable is not None:
            schema = unprocessable["content"]["application/json"]["schema"]
            assert schema == validation, (method, path)


def test_every_error_response_is_documented_as_json(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                content = response["content"]
                assert list(content) == ["application/json"], (method, path, code)
                assert content["application/json"]["schema"], (method, path, code)
    key = document["paths"]["/v1/integrity/public-key"]["get"]["responses"]
    assert key["404"]["content"] == {"application/json": {"schema": PROBLEM}}
    assert list(key["200"]["content"]) == ["application/x-pem-file"]


def test_the_public_key_is_served_as_documented(client: TestClient, as_role: Any) -> None:
    auditor = as_role("auditor")
    response = client.get("/v1/integrity/public-key", headers=auditor)
    assert response.headers["content-type"].startswith("application/x-pem-file")
    missing = client.get("/v1/integrity/public-key?key_id=nope", headers=auditor)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/events", "GET, POST"),
        ("PUT", "/v1/users", "GET, POST"),
        ("DELETE", "/v1/users/someone", "GET, PATCH"),
        ("PUT", "/v1/integrity/checkpoints", "GET, POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {"detail": "Method Not Allowed"}


def test_docs_authorize_with_client_credentials_in_basic_auth(
    client: TestClient, session: Session, context: AppContext
) -> None:
    """Swagger UI's client-credentials flow sends the client's id and secret as HTTP Basic."""
    assert client.get("/docs").status_code == 200
    assert client.get("/docs/oauth2-redirect").status_code == 200
    registered, secret = context.users.create_client(session, None, ClientCreate(name="Docs"))
    response = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials"},
        auth=(registered.client_id, secret),
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["kind"] == "client"
    wrong = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials"},
        auth=(registered.client_id, "wrong"),
    )
    assert wrong.status_code == 401
