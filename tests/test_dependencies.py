"""The dependencies the routes declare: a plain function runs in the threadpool.

FastAPI calls a dependency that is a plain function (or a class) in its threadpool, a hop
there and back on every request that uses it; it is worth that only when it blocks on I/O.
Everything else is a coroutine and runs on the event loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from app.auth.dependencies import current_principal
from app.main import create_app

# The dependencies that block on I/O: the caller's lookup reads the database.
BLOCKING: set[Callable[..., Any]] = {current_principal}


def _routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every route, through included routers (which FastAPI keeps as their own routes)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    if inspect.isclass(call):
        return False
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__  # type: ignore[operator]
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def test_only_dependencies_that_block_run_in_the_threadpool() -> None:
    app = create_app()
    routes = list(_routes(app.routes))
    assert len(routes) > 40
    plain = {
        f"{call.__module__}.{getattr(call, '__qualname__', call)}"
        for route in routes
        for call in _calls(route.dependant)
        if call not in BLOCKING and not _runs_on_the_loop(call)
    }
    assert plain == set(), f"plain-function dependencies outside BLOCKING: {sorted(plain)}"
    used = {call for route in routes for call in _calls(route.dependant)}
    assert BLOCKING <= used, "a dependency listed as blocking is no longer used"
