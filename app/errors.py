"""Domain errors and the one place that turns them into HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("access_audit")


class Problem(BaseModel):
    """An error body: a human-readable `detail`."""

    detail: str


class AppError(Exception):
    """Base of the domain errors; `status_code` is what the API answers."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class Unauthorized(AppError):
    status_code = 401


class Forbidden(AppError):
    status_code = 403


class TooManyRequests(AppError):
    """Too many requests from one source: 429, and when to try again (`Retry-After`)."""

    status_code = 429

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class LedgerUnavailable(AppError):
    """The audit log cannot be written: fail closed."""

    status_code = 503


class Invalid(AppError):
    """A request value the schema accepted but the rules refuse (422, naming the field)."""

    status_code = 422

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = list(loc)


UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def install_handlers(app: FastAPI) -> None:
    """Map domain errors (and database outages) to responses."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        if isinstance(exc, LedgerUnavailable):
            request.app.state.metrics.ledger_failures.inc()
        if isinstance(exc, Invalid):
            body = {"detail": [{"loc": exc.loc, "msg": exc.detail, "type": "value_error"}]}
            return JSONResponse(body, status_code=422)
        headers = UNAUTHORIZED_HEADERS if isinstance(exc, Unauthorized) else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # Fail closed: a database that cannot be written never turns into an allow.
        request.app.state.metrics.ledger_failures.inc()
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else exc)
        return JSONResponse(
            {"detail": "the audit log is unavailable; nothing was recorded"}, status_code=503
        )
