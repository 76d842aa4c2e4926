"""The ASGI application: `app.main:app`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from app import openapi, operations
from app.access.router import router as access_router
from app.auth.gate import BearerGate
from app.auth.router import router as auth_router
from app.config import Settings
from app.context import AppContext, attach, build_context
from app.dashboard.router import STATIC_PATH, static_files
from app.dashboard.router import router as dashboard_router
from app.errors import install_handlers
from app.ledger.log_router import router as log_router
from app.ledger.router import router as integrity_router
from app.policy.router import router as policy_router
from app.reports.router import router as reports_router
from app.users.router import router as users_router

DESCRIPTION = """
Record-access decisions and a tamper-evident audit log for the Guard's administrative
support mission at ICE-contracted county jails.

* **integration** clients ask for decisions (`POST /v1/decisions`) and report accesses
  (`POST /v1/events`);
* **oversight** officers read the log, reports and flags, and review flagged events;
* **auditors** export signed CSV and verify the log's integrity;
* **admins** manage users, training records and clients.

Get a token at `POST /v1/auth/token` (use *Authorize* above).
"""


def create_app(settings: Settings | None = None, context: AppContext | None = None) -> FastAPI:
    """Build the app; the context (database, policy, keys) is built at start-up if not given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = getattr(app.state, "context", None) is None
        if owned:
            built = build_context(settings or Settings())
            built.start()
            attach(app, built)
            # Checkpoints and their witnesses, in the background: never in an append's way.
            background = built.background()
            loop = asyncio.get_running_loop()
            for worker in background:
                worker.start(loop)
            # What start-up built lives as long as the process: keep the cyclic collector
            # from re-scanning it in every full collection (they stall list requests).
            gc.freeze()
        yield
        if owned:
            for worker in background:
                # Off the loop: a worker may be waiting on it for its turn to write.
                await run_in_threadpool(worker.stop)
            await app.state.context.stop()
            app.state.context.dispose()

    app = FastAPI(
        title="access-audit",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: ours are served from the
        # installed package (`openapi.install_docs`, below the routes of the API).
        docs_url=None,
        redoc_url=None,
    )
    if context is not None:
        attach(app, context)
    app.state.metrics = operations.Metrics()
    # Outermost last: metrics see every answer; a body over the limit is 413 and a
    # request that needs a token and has none is 401, both before the body is read.
    app.add_middleware(BearerGate)
    app.add_middleware(operations.BodyLimitMiddleware)
    app.add_middleware(operations.MetricsMiddleware, metrics=app.state.metrics)
    install_handlers(app)
    openapi.install(app)
    # Routes are matched in order: the access path's two, taken by nearly every request
    # of a busy service, come first.
    app.include_router(access_router)
    app.include_router(operations.router)
    app.include_router(auth_router)
    app.include_router(users_router)
    app.include_router(integrity_router)
    app.include_router(log_router)
    app.include_router(reports_router)
    app.include_router(policy_router)
    app.include_router(dashboard_router)
    app.mount(STATIC_PATH, static_files, name="dashboard-static")
    openapi.install_docs(app)
    return app


app = create_app()
