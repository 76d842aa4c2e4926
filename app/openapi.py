"""The OpenAPI document says what the server does (contract section 15), and 405 answers
name the methods a path really has.

FastAPI's document is completed once, when first asked for, from the routes themselves:

- 401 (with `WWW-Authenticate: Bearer`) on every route that needs a token, 403 on every
  route behind a role (naming the roles), 413 on every route with a body, 429 on the token
  endpoint; FastAPI's own 422 stays on every route with inputs;
- every error response is `application/json`: the `Problem` shape (`{"detail": ...}`) or
  FastAPI's validation error, never the route's success media type;
- one OAuth2 security scheme with both flows the token endpoint grants, password and
  client credentials (the *Authorize* button of /docs offers both).

The document is browsable at /docs (Swagger UI) and /redoc (ReDoc), and both work offline:
their scripts and style sheets are the copies the `fastapi-offline` package ships, served
from /docs/assets, never a CDN. The two pages carry a Content-Security-Policy that allows
only the service itself, and the one inline script Swagger UI's page needs by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute, RouteContext
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.auth.dependencies import decision_caller, require
from app.auth.gate import routes_of
from app.errors import UNAUTHORIZED_HEADERS, Problem

TOKEN_URL = "/v1/auth/token"
SCHEME = "OAuth2"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_GUARD_QUALNAME = require().__qualname__  # the role guards `require(...)` makes
SECURITY_SCHEME = {
    "type": "oauth2",
    "description": (
        "A bearer token from `POST /v1/auth/token`: people sign in with the password grant,"
        " integrations with the client-credentials grant."
    ),
    "flows": {
        "password": {"tokenUrl": TOKEN_URL, "scopes": {}},
        "clientCredentials": {"tokenUrl": TOKEN_URL, "scopes": {}},
    },
}


DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
DOCS_ASSETS_PATH = "/docs/assets"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON = (
    "swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"
)  # fmt: skip
# Swagger UI's own default would send the document's URL to a public validator for a badge.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}
# Both pages: nothing from elsewhere; no framing, no <base>, no form posting away; scripts
# from the service only (and, for Swagger UI, its one inline start-up script by hash).
# Style attributes and <style> elements are allowed: both UIs set them as they render.
# ReDoc runs its search index in a worker it makes from a blob.
_DOCS_CSP = (
    "default-src 'none'; script-src 'self'{script}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'{worker}; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def install(app: FastAPI) -> None:
    """Complete the app's OpenAPI document, and answer 405 with the path's real methods."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            complete(schema, app)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(405, method_not_allowed)


def install_docs(app: FastAPI) -> None:
    """/docs and /redoc from the assets the installed package ships (the app is built with
    `docs_url=None, redoc_url=None`, so FastAPI's CDN pages are not there)."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    title = app.title

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/{FAVICON}",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
        return _with_headers(page, worker=False)

    # Swagger UI's page for flows that redirect back (the password and client-credentials
    # flows of this service do not; kept where FastAPI puts it).
    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return _with_headers(get_swagger_ui_oauth2_redirect_html(), worker=False)

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_PATH}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_PATH}/{FAVICON}",
            with_google_fonts=False,
        )
        return _with_headers(page, worker=True)


def _with_headers(page: HTMLResponse, *, worker: bool) -> HTMLResponse:
    """The page with its security headers: each inline script allowed by its SHA-256."""
    html = bytes(page.body).decode("utf-8")
    hashes = "".join(
        " 'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    csp = _DOCS_CSP.format(script=hashes, worker="; worker-src blob:" if worker else "")
    return HTMLResponse(html, headers={
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    })  # fmt: skip


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 whose `Allow` lists every method of every route on the path (the router names
    only the first route it tried: GET and POST /v1/events are two routes)."""
    allowed: set[str] = set()
    for route, _needed in routes_of(request.app):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE and route.methods:
            allowed |= set(route.methods)
    headers = dict(getattr(exc, "headers", None) or {})
    if allowed:
        headers["Allow"] = ", ".join(sorted(allowed))
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else "Method Not Allowed"
    return JSONResponse({"detail": detail}, status_code=405, headers=headers)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for each in dependant.dependencies:
        yield from _calls(each)


def _roles(route: RouteContext) -> list[str] | None:
    """The roles a route requires (403 for a caller without any), or None if it has none."""
    dependant = getattr(route, "dependant", None)
    if not isinstance(dependant, Dependant):
        return None
    for call in _calls(dependant):
        if call is decision_caller:
            return ["integration"]
        if getattr(call, "__qualname__", None) == _GUARD_QUALNAME:
            wanted = inspect.getclosurevars(call).nonlocals.get("wanted", ())
            return sorted(wanted)
    return None


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": PROBLEM_REF}},
    }
    if headers:
        response["headers"] = headers
    return response


def complete(schema: dict[str, Any], app: FastAPI) -> None:
    """Add what the generated document leaves out (see the module's docstring)."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).setdefault("Problem", Problem.model_json_schema())
    components["securitySchemes"] = {SCHEME: SECURITY_SCHEME}
    for route, needed in routes_of(app):
        original = route.original_route
        if not isinstance(original, APIRoute) or not original.include_in_schema:
            continue
        item = schema["paths"].get(route.path_format, {})
        for method in route.methods or ():
            operation = item.get(method.lower())
            if operation is not None:
                _complete_operation(operation, route, needed)


def _complete_operation(operation: dict[str, Any], route: RouteContext, needed: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if needed:
        operation["security"] = [{SCHEME: []}]
        responses.setdefault("401", _problem(
            "No token, or one that is invalid or expired, or whose holder is no longer active",
            {name: {"schema": {"type": "string", "const": value}}
             for name, value in UNAUTHORIZED_HEADERS.items()},
        ))  # fmt: skip
    else:
        operation.pop("security", None)
    roles = _roles(route)
    if roles is not None:
        responses.setdefault(
            "403", _problem(f"Signed in, but without the role this needs: {' or '.join(roles)}")
        )
    if getattr(route, "body_field", None) is not None:
        responses.setdefault("413", _problem("The body is larger than AUDIT_MAX_BODY_BYTES"))
    if route.path_format == TOKEN_URL:
        responses.setdefault("429", _problem("Too many attempts: try again later"))
    for code, response in responses.items():
        if int(code) >= 400:
            _as_json(response)


def _as_json(response: dict[str, Any]) -> None:
    """An error response documented as what it is: JSON (the Problem shape by default)."""
    content = response.get("content") or {}
    found = next((media.get("schema") for media in content.values() if media.get("schema")), None)
    response["content"] = {"application/json": {"schema": found or PROBLEM_REF}}
