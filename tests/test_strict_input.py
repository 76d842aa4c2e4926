"""No coercion, and hostile input is a 422 (contract section 15): a value of the wrong type,
a time outside 1970-9999, an integer past what the column holds, a NUL, another control
character or a lone surrogate in a name or id, NaN, invalid UTF-8, nesting past any sane
depth. Never 400, 500 or 503, alike on SQLite and PostgreSQL, and nothing is appended."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.context import AppContext
from app.ledger.models import Event
from tests.conftest import NOV_3_MORNING, MovableClock, decision, make_actor, make_user

Headers = Callable[[str], dict[str, str]]
JSON = {"content-type": "application/json"}
BIG = 2**63


def events(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Event)) or 0


def encoded(body: Any) -> bytes:
    """`body` as Python's json writes it: NaN and lone surrogates (as \\ud800) included.
    (httpx refuses to send either, which is why the tests build the bytes themselves.)"""
    return json.dumps(body).encode()


def assert_422(response: Any, loc: list[Any] | None = None) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    if loc is not None:
        assert detail[0]["loc"] == loc, detail


@pytest.fixture
def mission(session: Session, context: AppContext, clock: MovableClock) -> AppContext:
    make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"])
    clock.set(NOV_3_MORNING)
    return context


def report(**overrides: Any) -> dict[str, Any]:
    body = {**decision(), "occurred_at": "2025-11-03T09:00:00-06:00", "client_event_id": "e-1"}
    body.update(overrides)
    return body


# -- bodies of the access endpoints -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        # no coercion to a boolean: break glass is `true`, nothing else
        (decision(break_glass="yes"), ["body", "break_glass"]),
        (decision(break_glass="true"), ["body", "break_glass"]),
        (decision(break_glass=1), ["body", "break_glass"]),
        (decision(break_glass=0), ["body", "break_glass"]),
        (decision(break_glass=float("inf")), ["body", "break_glass"]),
        # lone surrogates (cannot be stored or hashed as UTF-8)
        (decision(actor="sgt.\ud800miller"), ["body", "actor"]),
        (decision(justification="urgent \udfff"), ["body", "justification"]),
        (
            decision(record={"type": "detainee_case", "id": "GRN-\ud83d", "facility": "greene"}),
            ["body", "record", "id"],
        ),
        (decision(purpose="\udc00"), ["body", "purpose"]),
        # NaN where a name is expected, and anywhere else
        (decision(actor=float("nan")), ["body", "actor"]),
        (decision(surprise=float("nan")), ["body", "surprise"]),
        # control characters beyond C0: C1 controls, and bidirectional overrides in an id
        (decision(actor="sgt.\x85miller"), ["body", "actor"]),
        (decision(workstation="GRN-\x9b31m"), ["body", "workstation"]),
        (decision(client_event_id="\u202ecms-1"), ["body", "client_event_id"]),
    ],
)
def test_decision_values_are_not_coerced_or_stored(
    client: TestClient,
    integration: dict[str, str],
    mission: AppContext,
    session: Session,
    body: dict[str, Any],
    loc: list[Any],
) -> None:
    before = events(session)
    response = client.post("/v1/decisions", content=encoded(body), headers={**integration, **JSON})
    assert_422(response, loc)
    assert events(session) == before


def test_a_lone_surrogate_in_a_key_is_a_422(
    client: TestClient, integration: dict[str, str], mission: AppContext, session: Session
) -> None:
    before = events(session)
    body = encoded({**decision(), "\ud800": 1})
    response = client.post("/v1/decisions", content=body, headers={**integration, **JSON})
    assert_422(response)
    assert response.json()["detail"][0]["loc"][0] == "body"
    assert events(session) == before


DEEP = 100_000


@pytest.mark.parametrize(
    "content",
    [
        b'{"actor": "sgt.\xffmiller"}',  # invalid UTF-8
        b'{"actor": "sgt.\xc3miller"}',  # a truncated sequence
        b"[" * DEEP + b"]" * DEEP,  # nesting far past any sane depth
        b'{"surprise": ' + b"[" * 900 + b"]" * 900 + b"}",  # deep, in a field refused anyway
        b"NaN",
        b'"\\ud800"',
        b"-Infinity",
    ],
    ids=["invalid-utf8", "truncated-utf8", "deep", "deep-field", "nan", "surrogate", "infinity"],
)
@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/events"])
def test_undecodable_bodies_are_422(
    client: TestClient,
    integration: dict[str, str],
    mission: AppContext,
    session: Session,
    path: str,
    content: bytes,
) -> None:
    before = events(session)
    response = client.post(path, content=content, headers={**integration, **JSON})
    assert_422(response)
    assert response.json()["detail"][0]["loc"][0] == "body"
    assert events(session) == before


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00",  # 1969 in UTC
        "9999-12-31T23:59:59-05:00",  # past 9999 in UTC
        0,  # a number is not a time
        1762182000,
        1762182000.5,
        "1762182000",  # nor is a string of digits
        True,
    ],
)
def test_report_times_outside_1970_9999_or_not_strings_are_422(
    client: TestClient,
    integration: dict[str, str],
    mission: AppContext,
    session: Session,
    occurred_at: Any,
) -> None:
    before = events(session)
    body = {"events": [report(occurred_at=occurred_at)]}
    response = client.post("/v1/events", content=encoded(body), headers={**integration, **JSON})
    assert_422(response, ["body", "events", 0, "occurred_at"])
    assert events(session) == before


# -- users, training and clients ----------------------------------------------------------

CLERK: dict[str, Any] = {
    "username": "sgt.miller",
    "full_name": "Sgt. Dana Miller",
    "roles": ["guard_clerk"],
    "facilities": ["greene"],
    "volunteer": True,
}


@pytest.fixture
def admin(as_role: Headers) -> dict[str, str]:
    return as_role("admin")


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"volunteer": "yes"}, ["body", "volunteer"]),
        ({"volunteer": 1}, ["body", "volunteer"]),
        ({"volunteer": "true"}, ["body", "volunteer"]),
        ({"password": " " * 12}, ["body", "password"]),
        ({"password": "\t \n" * 5}, ["body", "password"]),
        ({"password": "long enough \ud800"}, ["body", "password"]),
        ({"full_name": "Dana\x00Miller"}, ["body", "full_name"]),
        ({"full_name": "Dana \ud800"}, ["body", "full_name"]),
        ({"roles": ["guard_clerk\x00"]}, ["body", "roles", 0]),
        ({"facilities": ["greene\x00"]}, ["body", "facilities", 0]),
        # integration is a machine role: never beside a human one
        ({"roles": ["admin", "integration"]}, ["body", "roles"]),
        ({"roles": ["guard_clerk", "integration"]}, ["body", "roles"]),
        ({"roles": ["oversight", "integration"]}, ["body", "roles"]),
        ({"roles": ["integration", "ice_officer"]}, ["body", "roles"]),
    ],
)
def test_create_user_refuses_coercion_and_bad_text(
    client: TestClient,
    admin: dict[str, str],
    session: Session,
    change: dict[str, Any],
    loc: list[Any],
) -> None:
    before = events(session)
    response = client.post(
        "/v1/users", content=encoded({**CLERK, **change}), headers={**admin, **JSON}
    )
    assert_422(response, loc)
    assert events(session) == before


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"active": 0}, ["body", "active"]),
        ({"active": "false"}, ["body", "active"]),
        ({"volunteer": "no"}, ["body", "volunteer"]),
        ({"password": " " * 20}, ["body", "password"]),
        ({"full_name": "\x00"}, ["body", "full_name"]),
        ({"roles": ["admin", "integration"]}, ["body", "roles"]),
        ({"roles": ["guard_supervisor", "integration"]}, ["body", "roles"]),
    ],
)
def test_patch_user_refuses_coercion_and_bad_text(
    client: TestClient,
    admin: dict[str, str],
    session: Session,
    change: dict[str, Any],
    loc: list[Any],
) -> None:
    assert client.post("/v1/users", json=CLERK, headers=admin).status_code == 201
    before = events(session)
    response = client.patch(
        "/v1/users/sgt.miller", content=encoded(change), headers={**admin, **JSON}
    )
    assert_422(response, loc)
    assert events(session) == before
    assert client.get("/v1/users/sgt.miller", headers=admin).json()["active"] is True


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"module": "data_handling", "completed_on": 0}, ["body", "completed_on"]),
        ({"module": "data_handling", "completed_on": 1758326400}, ["body", "completed_on"]),
        ({"module": "data_handling", "completed_on": "1758326400"}, ["body", "completed_on"]),
        ({"module": "data_handling", "completed_on": "0001-01-01"}, ["body", "completed_on"]),
        ({"module": "data_handling", "completed_on": "1969-12-31"}, ["body", "completed_on"]),
        (
            {"module": "data_handling", "completed_on": "2025-09-20", "expires_on": 0},
            ["body", "expires_on"],
        ),
        ({"module": "data\x00handling", "completed_on": "2025-09-20"}, ["body", "module"]),
    ],
)
def test_training_dates_are_iso_days_in_range(
    client: TestClient,
    admin: dict[str, str],
    session: Session,
    body: dict[str, Any],
    loc: list[Any],
) -> None:
    assert client.post("/v1/users", json=CLERK, headers=admin).status_code == 201
    before = events(session)
    response = client.post(
        "/v1/users/sgt.miller/training", content=encoded(body), headers={**admin, **JSON}
    )
    assert_422(response, loc)
    assert events(session) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("POST", "/v1/clients", {"name": "Greene\x00CMS"}, ["body", "name"]),
        ("POST", "/v1/clients", {"name": "Greene \ud800"}, ["body", "name"]),
        ("PATCH", "/v1/clients/{client_id}", {"active": 0}, ["body", "active"]),
        ("PATCH", "/v1/clients/{client_id}", {"active": "false"}, ["body", "active"]),
    ],
)
def test_client_bodies_are_strict(
    client: TestClient,
    admin: dict[str, str],
    session: Session,
    method: str,
    path: str,
    body: dict[str, Any],
    loc: list[Any],
) -> None:
    created = client.post("/v1/clients", json={"name": "Greene CMS"}, headers=admin).json()
    before = events(session)
    response = client.request(
        method,
        path.format(client_id=created["client_id"]),
        content=encoded(body),
        headers={**admin, **JSON},
    )
    assert_422(response, loc)
    assert events(session) == before


# -- paths and queries: NUL, huge integers, times out of range ----------------------------


@pytest.mark.parametrize(
    ("role", "method", "url", "body", "loc"),
    [
        ("admin", "GET", "/v1/users/sgt%00miller", None, ["path", "username"]),
        ("admin", "PATCH", "/v1/users/sgt%00miller", {"active": False}, ["path", "username"]),
        (
            "admin",
            "POST",
            "/v1/users/sgt%00miller/training",
            {"module": "data_handling", "completed_on": "2025-09-20"},
            ["path", "username"],
        ),
        ("admin", "PATCH", "/v1/clients/cli%00x", {"active": False}, ["path", "client_id"]),
        ("oversight", "GET", "/v1/events?actor=sgt%00miller", None, ["query", "actor"]),
        ("oversight", "GET", "/v1/events?record_id=GRN%01", None, ["query", "record_id"]),
        ("oversight", "GET", "/v1/reports/summary?facility=%00", None, ["query", "facility"]),
        (
            "oversight",
            "GET",
            "/v1/records/detainee_case/GRN%00/accesses",
            None,
            ["path", "record_id"],
        ),
        (
            "oversight",
            "GET",
            "/v1/records/detainee%00case/GRN-1/accesses",
            None,
            ["path", "record_type"],
        ),
        ("oversight", "GET", "/v1/integrity/public-key?key_id=ab%00", None, ["query", "key_id"]),
        ("auditor", "GET", "/v1/exports/x%00y/manifest", None, ["path", "export_id"]),
        ("auditor", "GET", "/v1/exports/events.csv?purpose=%00", None, ["query", "purpose"]),
        # integers past the seq column (INTEGER: 2^31 - 1), and past 2^63 - 1
        ("oversight", "GET", f"/v1/events/{BIG}", None, ["path", "seq"]),
        ("oversight", "GET", f"/v1/events/{2**31}", None, ["path", "seq"]),
        ("oversight", "GET", f"/v1/events/{10**30}", None, ["path", "seq"]),
        ("oversight", "GET", f"/v1/events/{BIG}/reviews", None, ["path", "seq"]),
        (
            "oversight",
            "POST",
            f"/v1/events/{BIG}/reviews",
            {"disposition": "justified"},
            ["path", "seq"],
        ),
        ("oversight", "GET", f"/v1/integrity/verify?from_seq={BIG}", None, ["query", "from_seq"]),
        ("auditor", "GET", f"/v1/integrity/verify?to_seq={BIG}", None, ["query", "to_seq"]),
        # times outside 1970-9999, the since/until filters too
        ("oversight", "GET", "/v1/events?since=0001-01-01", None, ["query", "since"]),
        ("oversight", "GET", "/v1/events?until=1969-12-31", None, ["query", "until"]),
        ("oversight", "GET", "/v1/events?since=0001-01-01T00:00:00Z", None, ["query", "since"]),
        (
            "oversight",
            "GET",
            "/v1/events?until=9999-12-31T23:00:00-05:00",
            None,
            ["query", "until"],
        ),
        ("oversight", "GET", "/v1/reports/summary?since=0001-01-01", None, ["query", "since"]),
        ("oversight", "GET", "/v1/reports/denials?until=0001-01-02", None, ["query", "until"]),
        (
            "oversight",
            "GET",
            "/v1/records/detainee_case/GRN-1/accesses?since=0001-01-01",
            None,
            ["query", "since"],
        ),
        ("auditor", "GET", "/v1/exports/events.csv?since=0001-01-01", None, ["query", "since"]),
        ("auditor", "GET", "/v1/exports/summary.csv?until=0002-01-01", None, ["query", "until"]),
        # a review's note is free text: no NUL, no lone surrogate
        (
            "oversight",
            "POST",
            "/v1/events/{seq}/reviews",
            {"disposition": "violation", "note": "no case \x00 assigned"},
            ["body", "note"],
        ),
        (
            "oversight",
            "POST",
            "/v1/events/{seq}/reviews",
            {"disposition": "violation", "note": "no case \ud800"},
            ["body", "note"],
        ),
    ],
)
def test_paths_and_queries_are_422_alike_on_every_database(
    client: TestClient,
    as_role: Headers,
    session: Session,
    context: AppContext,
    role: str,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    loc: list[Any],
) -> None:
    from tests.conftest import at, record_access

    seq = record_access(
        session, context, occurred_at=at("2025-10-06T15:00:00+00:00"), flags=["after_hours"]
    )
    headers = as_role(role)
    before = events(session)
    content = encoded(body) if body is not None else None
    response = client.request(
        method, url.format(seq=seq), content=content, headers={**headers, **JSON}
    )
    assert_422(response, loc)
    assert events(session) == before


@pytest.mark.parametrize(
    "query",
    [
        "since=1970-01-01",
        "until=9999-12-31",
        "since=9999-12-31",
        "since=1970-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
        "until=9999-12-31T23:59:59.999999Z",
    ],
)
def test_the_edges_of_1970_9999_are_times_like_any_other(
    client: TestClient, as_role: Headers, query: str
) -> None:
    reader = as_role("oversight")
    for path in ("/v1/events", "/v1/reports/summary", "/v1/reports/denials"):
        response = client.get(f"{path}?{query}", headers=reader)
        assert response.status_code == 200, (path, response.text)
    assert client.get(f"/v1/events/{2**31 - 1}", headers=reader).status_code == 404


# -- the token endpoint and the token's claims --------------------------------------------


@pytest.mark.parametrize(
    ("form", "loc"),
    [
        (
            {"grant_type": "password", "username": "officer\x00lee", "password": "x" * 12},
            ["body", "username"],
        ),
        (
            {"grant_type": "password", "username": "officer\x85lee", "password": "x" * 12},
            ["body", "username"],
        ),
        (
            {"grant_type": "client_credentials", "client_id": "cli_\x00", "client_secret": "s"},
            ["body", "client_id"],
        ),
    ],
)
def test_login_names_with_control_characters_are_422_and_not_logged(
    client: TestClient,
    session: Session,
    context: AppContext,
    form: dict[str, str],
    loc: list[Any],
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    before = events(session)
    response = client.post("/v1/auth/token", data=form)
    assert_422(response, loc)
    assert events(session) == before


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"grant_type=password", "multipart/form-data; boundary=zz"),
        (b"grant_type=password", "multipart/form-data"),  # no boundary
    ],
)
def test_an_undecodable_form_is_422_and_not_logged(
    client: TestClient, session: Session, content: bytes, content_type: str
) -> None:
    before = events(session)
    response = client.post(
        "/v1/auth/token", content=content, headers={"content-type": content_type}
    )
    assert_422(response)
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert events(session) == before


def test_a_failed_login_is_still_logged(
    client: TestClient, session: Session, context: AppContext
) -> None:
    """The guard for the test above: a clean name that fails is a 401, and it is logged."""
    before = events(session)
    form = {"grant_type": "password", "username": "officer.nobody", "password": "x" * 12}
    assert client.post("/v1/auth/token", data=form).status_code == 401
    assert events(session) == before + 1


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": None},
        {"exp": [4102444800]},
        {"exp": "4102444800"},
        {"exp": {"at": 4102444800}},
        {"exp": True},
        {"exp": 10**400},
        {"exp": float("nan")},
        {"exp": float("inf")},
        {"exp": 1e300},  # far past 9999
        {"sub": "officer\x00lee"},
        {"sub": ["officer.lee"]},
    ],
    ids=repr,
)
def test_token_claims_of_the_wrong_type_are_401(
    client: TestClient, session: Session, context: AppContext, claims: dict[str, Any]
) -> None:
    make_user(session, context, "officer.lee", ["oversight"])
    now = int(context.clock().timestamp())
    good = {"sub": "officer.lee", "typ": "user", "iat": now, "exp": now + 600}
    secret = context.settings.secret_key
    assert secret is not None
    forged = jwt.encode({**good, **claims}, secret, algorithm=context.settings.jwt_algorithm)
    response = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401, response.text
