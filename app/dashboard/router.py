"""GET /dashboard: the page, and its script and style sheet as static files (no data: that
comes from /v1).

The page needs no token to load; it signs in through `POST /v1/auth/token` and keeps the
token in the tab's sessionStorage. Nothing is loaded from elsewhere (it works offline),
and the Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(tags=["dashboard"], include_in_schema=False)

HERE = Path(__file__).resolve().parent
STATIC_PATH = "/dashboard/static"
static_files = StaticFiles(directory=HERE / "static")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """The oversight dashboard (contract section 12)."""
    page = (HERE / "templates" / "dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers=SECURITY_HEADERS)
