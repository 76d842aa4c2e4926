"""Operations: liveness, readiness, Prometheus metrics, and the request-metrics middleware."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.deps import ContextDep
from app.ledger import witnessing

log = logging.getLogger("access_audit")

router = APIRouter(tags=["operations"])
DEFAULT_MAX_BODY = Settings.model_fields["max_body_bytes"].default


class Metrics:
    """The service's own registry (one per app, so tests can build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "audit_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "audit_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "audit_access_decisions_total",
            "Access events judged, by kind and decision",
            ["kind", "decision"],
            registry=self.registry,
        )
        self._judged: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}
        self.ledger_failures = Counter(
            "audit_ledger_write_failures_total",
            "Requests that could not be written to the log",
            registry=self.registry,
        )
        self.witness_lag_events = Gauge(
            "audit_witness_lag_events",
            "Events in the latest checkpoint that the witness has not cosigned",
            ["witness"],
            registry=self.registry,
        )
        self.witness_lag_seconds = Gauge(
            "audit_witness_lag_seconds",
            "Seconds between the latest checkpoint and the latest one the witness cosigned",
            ["witness"],
            registry=self.registry,
        )

    # The labelled children, kept: looking one up costs more than counting (every request).
    def judged(self, kind: str, decision: str, count: int) -> None:
        """Count `count` access events of `kind` judged `decision`."""
        child = self._judged.get((kind, decision))
        if child is None:
            child = self._judged[(kind, decision)] = self.decisions.labels(kind, decision)
        child.inc(count)

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(*key)
        child.inc()
        timer = self._latency.get((method, route))
        if timer is None:
            timer = self._latency[(method, route)] = self.latency.labels(method, route)
        timer.observe(seconds)


class MetricsMiddleware:
    """Counts and times every request by its route template (pure ASGI: streams pass through)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.request_done(scope["method"], path, status, time.perf_counter() - started)


def _body_limit(scope: Scope) -> int:
    context = getattr(scope["app"].state, "context", None)
    limit: int = context.settings.max_body_bytes if context is not None else DEFAULT_MAX_BODY
    return limit


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses it before the app sees it
    return None


class BodyTooLarge(Exception):
    """The body streamed in passed the limit (raised to the app from `receive`)."""


class BodyLimitMiddleware:
    """413 for a body over `AUDIT_MAX_BODY_BYTES`, before it is parsed (pure ASGI).

    A `Content-Length` over the limit is answered at once, from the headers; a body
    without one (chunked) is counted as it arrives, and the app's `receive` fails as soon
    as it passes the limit: whatever the app then answers is replaced by the 413, so no
    route ever holds more than the limit of a body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = _body_limit(scope)
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counting() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(f"request body over {limit} bytes")
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app's answer to a body it could not have: the 413 instead
                if not started:
                    started = True
                    await _too_large(limit)(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting, guarded)
        except Exception:
            if not exceeded:
                raise
            if not started:
                await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"the request body is larger than {limit} bytes"},
        status_code=413,
        headers={"Connection": "close"},  # the rest of the body is not read
    )


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class Readiness(BaseModel):
    """The readiness answer: `ready` or `unavailable`, and each check's result."""

    status: str
    checks: dict[str, str]


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: see `checks`"}},
)
def readyz(context: ContextDep) -> JSONResponse:
    """Ready when the database answers, the log can actually be written (its lock taken and
    a write that changes nothing tried, then rolled back) and a policy is loaded."""
    checks: dict[str, Any] = {"policy": context.policy.version}
    try:
        with context.database.reader() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
        with context.database.writer() as session:
            context.ledger.probe_write(session)
            session.rollback()
        checks["ledger"] = "writable"
    except Exception as exc:  # any failure means not ready; say which kind
        failed = "ledger" if "database" in checks else "database"
        checks[failed] = f"unavailable: {type(exc).__name__}"
    ready = checks.get("ledger") == "writable"
    if ready:  # a witness that lags is reported, never a reason to be unready
        with context.database.reader() as session:
            for status in witnessing.statuses(session, context.witnesses):
                checks[f"witness {status.name}"] = (
                    f"cosigned {status.cosigned_size}; behind by {status.lag_events} events, "
                    f"{status.lag_seconds:.1f} s"
                )
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response)
def metrics(request: Request, context: ContextDep) -> Response:
    """Prometheus text exposition."""
    found: Metrics = request.app.state.metrics
    if context.witnesses:
        try:
            with context.database.reader() as session:
                for status in witnessing.statuses(session, context.witnesses):
                    found.witness_lag_events.labels(status.name).set(status.lag_events)
                    found.witness_lag_seconds.labels(status.name).set(status.lag_seconds)
        except SQLAlchemyError:
            log.warning("witness lag unknown: the database is unavailable")
    registry = found.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
