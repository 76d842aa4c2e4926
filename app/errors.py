"""Domain errors and the one place that turns them into HTTP responses."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

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
        self.errors: list[tuple[list[str | int], str]] = [(self.loc, message)]

    @classmethod
    def many(cls, errors: Sequence[tuple[Sequence[str | int], str]]) -> Invalid:
        """One 422 listing several problems, each with its location."""
        first = cls(errors[0][0], errors[0][1])
        first.errors = [(list(loc), message) for loc, message in errors]
        return first


UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}
# FastAPI's 400 for a body it could not decode (invalid UTF-8, nesting too deep for the
# parser): a 422 like any other bad input (contract section 15). The service raises no 400
# of its own: the others are a form it could not decode (e.g. broken multipart), also 422.
BODY_NOT_DECODED = "There was an error parsing the body"
UNDECODABLE = {
    "detail": [
        {
            "loc": ["body"],
            "msg": "the body is not JSON in UTF-8, or is nested too deeply",
            "type": "json_invalid",
        }
    ]
}


def validation_body(errors: Sequence[Any]) -> bytes:
    """The 422 body of validation errors, always renderable: an input that JSON cannot
    carry back (NaN, a lone surrogate, nesting deeper than the encoder goes) is left out,
    and such characters in a location or message are escaped."""
    try:
        content = {"detail": jsonable_encoder(errors)}
        return json.dumps(content, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    plain = [
        {
            "type": _printable(error.get("type", "value_error")),
            "loc": [p if isinstance(p, int) else _printable(p) for p in error.get("loc", ())],
            "msg": _printable(error.get("msg", "")),
        }
        for error in errors
    ]
    return json.dumps({"detail": plain}, ensure_ascii=False).encode()


def _printable(value: object) -> str:
    return str(value).encode("utf-8", "backslashreplace").decode()


def install_handlers(app: FastAPI) -> None:
    """Map domain errors (and database outages) to responses."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        if isinstance(exc, LedgerUnavailable):
            request.app.state.metrics.ledger_failures.inc()
        if isinstance(exc, Invalid):
            body = {
                "detail": [
                    {"loc": loc, "msg": msg, "type": "value_error"} for loc, msg in exc.errors
                ]
            }
            return JSONResponse(body, status_code=422)
        headers = UNAUTHORIZED_HEADERS if isinstance(exc, Unauthorized) else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        body = validation_body(exc.errors())
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == BODY_NOT_DECODED:
            return JSONResponse(UNDECODABLE, status_code=422)
        if exc.status_code == 400:
            error = {"loc": ["body"], "msg": _printable(exc.detail), "type": "body_invalid"}
            return JSONResponse({"detail": [error]}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # Fail closed: a database that cannot be written never turns into an allow.
        request.app.state.metrics.ledger_failures.inc()
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else exc)
        return JSONResponse(
            {"detail": "the audit log is unavailable; nothing was recorded"}, status_code=503
        )
