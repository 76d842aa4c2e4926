"""The bearer gate: a request to a route that needs a token is refused with 401 from its
headers alone, before its body is read (contract section 15: an unauthenticated request
never costs more than reading its headers).

Pure ASGI, in front of the routes. A route needs a token when its dependencies include the
bearer scheme (`app.auth.dependencies.oauth2_scheme`): every route behind a role guard or
`current_principal`, and nothing else (the token endpoint, health, metrics, the docs and
the dashboard stay open). The gate checks what a token can show without the database
(signature, algorithm, expiry: `TokenService.read`, whose verified tokens are cached); the
route's own dependencies still look the caller up and check its roles.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.dependencies import oauth2_scheme
from app.auth.tokens import TokenService
from app.errors import UNAUTHORIZED_HEADERS, Unauthorized


def needs_token(route: RouteContext) -> bool:
    """Whether the route's dependencies (its router's included) include the bearer token."""
    if not isinstance(route.original_route, APIRoute):
        return False
    dependant = getattr(route, "dependant", None)
    return isinstance(dependant, Dependant) and _uses_bearer(dependant)


def _uses_bearer(dependant: Dependant) -> bool:
    return dependant.call is oauth2_scheme or any(
        _uses_bearer(each) for each in dependant.dependencies
    )


def routes_of(app: Any) -> list[tuple[RouteContext, bool]]:
    """Every route of the app in the router's order (included routers flattened), each with
    whether it needs a token. Computed once per app (its routes are fixed once it serves)."""
    routes: list[BaseRoute] = app.router.routes
    known: tuple[int, list[tuple[RouteContext, bool]]] | None = getattr(
        app.state, "_gate_routes", None
    )
    if known is None or known[0] != len(routes):
        # Once, under a lock: the first requests arrive together, and building the route
        # contexts (pydantic schemas) from several threads at once is not safe.
        with _ROUTES_LOCK:
            known = getattr(app.state, "_gate_routes", None)
            if known is None or known[0] != len(routes):
                flat = [(route, needs_token(route)) for route in iter_route_contexts(routes)]
                known = (len(routes), flat)
                app.state._gate_routes = known
    return known[1]


_ROUTES_LOCK = threading.Lock()


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer …` header (the scheme in any case)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class BearerGate:
    """401 (with `WWW-Authenticate: Bearer`) before the body is read, for a route that needs
    a token when the request carries none or one that does not verify."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app: Any = scope["app"]
        matched = self._route(app, scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        detail = "not authenticated"
        if token is not None:
            tokens: TokenService = app.state.tokens
            try:
                tokens.read(token)
            except Unauthorized as exc:
                detail = exc.detail
            else:
                await self.app(scope, receive, send)
                return
        scope.update(matched)  # the route it was for (request metrics are by route)
        headers = dict(UNAUTHORIZED_HEADERS)
        if _has_body(scope["headers"]):
            headers["Connection"] = "close"  # do not wait for a body nobody will read
        response = JSONResponse({"detail": detail}, status_code=401, headers=headers)
        await response(scope, receive, send)

    def _route(self, app: Any, scope: Scope) -> Scope | None:
        """The child scope of the route the request is for, if that route needs a token.

        As the router does: the first route that matches path and method. A path that
        matches only with another method (405) or no route (404) passes: those answers
        read no body either."""
        for route, needed in routes_of(app):
            match, child = route.matches(scope)
            if match is Match.FULL:
                if not needed:
                    return None
                return {**child, "route": route.original_route}
        return None
