"""docs/integrating.md stays true: each of its marked examples is sent to the real app, in
the guide's order, by a client registered the way the guide says, with the server's clock
where the guide says it was; the answers must be the guide's, up to the values that differ
on every run (ids, secrets, tokens, positions in the log, the policy's hash). Every field
the guide's bodies name is one of the OpenAPI document's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.context import AppContext
from tests.conftest import PASSWORD, MovableClock, at, make_actor, make_user

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "integrating.md"
# <!-- request: METHOD PATH [form] [no-token] --> then a fenced block, and
# <!-- response: STATUS --> then a fenced block.
MARK = re.compile(r"<!-- (request|response): ([^>]*?) -->\n+```[a-z]*\n(.*?)\n```", re.DOTALL)
CLOCK = re.compile(r"<!-- clock: (\S+) -->")
# The same on no two runs: compared by type (and seq by its order).
VARYING = {"seq", "event_id", "policy_version", "access_token", "client_id", "client_secret"}


def examples() -> list[tuple[str, str, str]]:
    return [(kind, spec.strip(), body) for kind, spec, body in MARK.findall(GUIDE.read_text())]


def alike(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where `actual` differs from the guide's `expected` (varying values by type only)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if list(expected) != list(actual):
            return [f"{where}: keys {list(actual)} not {list(expected)}"]
        problems: list[str] = []
        for key, value in expected.items():
            if key in VARYING:
                if type(value) is not type(actual[key]):
                    problems.append(f"{where}.{key}: {actual[key]!r}")
            else:
                problems += alike(value, actual[key], f"{where}.{key}")
        return problems
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [p for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for p in alike(e, a, f"{where}[{i}]")]  # fmt: skip
    return [] if expected == actual else [f"{where}: {actual!r} not {expected!r}"]


def test_the_guide_has_its_examples() -> None:
    kinds = [kind for kind, _, _ in examples()]
    assert len(kinds) >= 10
    assert kinds == ["request", "response"] * (len(kinds) // 2)
    paths = {spec.split()[1] for kind, spec, _ in examples() if kind == "request"}
    assert {"/v1/auth/token", "/v1/clients", "/v1/decisions", "/v1/events"} <= paths


def test_the_guides_examples_are_what_the_service_answers(
    client: TestClient, session: Session, context: AppContext, clock: MovableClock
) -> None:
    # The guide's world: the demo's actors, an admin, and the server's clock it names.
    [when] = CLOCK.findall(GUIDE.read_text())
    clock.set(at(when))
    make_actor(session, context, "sgt.miller", ["guard_clerk"], ["greene"])
    make_actor(session, context, "pfc.walker", ["guard_logistics"], ["greene"])
    make_user(session, context, "admin", ["admin"], password=PASSWORD)
    registered: dict[str, str] = {}
    tokens: dict[str, str] = {}
    problems: list[str] = []
    seqs: list[tuple[int, int]] = []  # (the guide's, the service's)
    pairs = examples()
    for (_, spec, request), (_, status, expected) in zip(pairs[::2], pairs[1::2], strict=True):
        method, path, *options = spec.split()
        holder = "admin" if path.startswith("/v1/clients") else "client"
        headers = {} if "no-token" in options else {"Authorization": f"Bearer {tokens[holder]}"}
        if "form" in options:
            form = dict(parse_qsl(request.strip()))
            if form.get("grant_type") == "password":
                form["password"] = PASSWORD
            else:
                form.update(registered)
            response = client.request(method, path, data=form, headers=headers)
        else:
            response = client.request(method, path, content=request, headers={
                **headers, "Content-Type": "application/json"})  # fmt: skip
        actual = response.json()
        found = alike(json.loads(expected), actual, f"{spec}")
        if str(response.status_code) != status.split()[0]:
            found.append(f"{spec}: status {response.status_code} not {status}")
        if found:
            problems += [*found, f"  actual: {json.dumps(actual)}"]
        if path == "/v1/clients" and response.status_code == 201:
            registered = {k: actual[k] for k in ("client_id", "client_secret")}
        if path == "/v1/auth/token" and response.status_code == 200:
            grant = dict(parse_qsl(request.strip()))["grant_type"]
            tokens["admin" if grant == "password" else "client"] = actual["access_token"]
        for shown, got in zip(_seqs(json.loads(expected)), _seqs(actual), strict=False):
            seqs.append((shown, got))
    assert not problems, "\n".join(problems)
    # seq: the guide's and the service's agree on which are the same event and their order.
    shown_order = sorted(set(seqs), key=lambda pair: pair[0])
    assert [got for _, got in shown_order] == sorted(got for _, got in shown_order)
    assert len({shown for shown, _ in seqs}) == len({got for _, got in seqs})


def _seqs(body: Any) -> list[int]:
    if isinstance(body, dict):
        found = [body["seq"]] if isinstance(body.get("seq"), int) else []
        return found + [s for value in body.values() for s in _seqs(value)]
    if isinstance(body, list):
        return [s for value in body for s in _seqs(value)]
    return []


def _fields(schema: Any, components: dict[str, Any], seen: set[str]) -> set[str]:
    """Every property name reachable from a schema."""
    names: set[str] = set()
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            names |= _fields(components[ref.rsplit("/", 1)[1]], components, seen)
        names |= set(schema.get("properties", {}))
        for value in schema.values():
            names |= _fields(value, components, seen)
    elif isinstance(schema, list):
        for value in schema:
            names |= _fields(value, components, seen)
    return names


def _keys(body: Any) -> set[str]:
    if isinstance(body, dict):
        # A reason's `data` is free-form (its keys depend on the reason).
        return set(body) | {k for key, value in body.items() if key != "data" for k in _keys(value)}
    if isinstance(body, list):
        return {k for value in body for k in _keys(value)}
    return set()


@pytest.mark.parametrize("kind", ["request", "response"])
def test_every_field_the_guide_names_is_in_the_openapi_document(
    client: TestClient, kind: str
) -> None:
    document = client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    known = _fields(document, components, set()) | {"detail", "loc", "msg", "type"}
    for each, spec, body in examples():
        if each == kind and "form" not in spec.split():
            assert _keys(json.loads(body)) <= known, (spec, _keys(json.loads(body)) - known)
