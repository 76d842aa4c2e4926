"""The oversight dashboard (contract section 12): served without a token, self-contained,
and built on the guarded API endpoints only."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from app.main import create_app

API_PATHS = (
    "/v1/auth/token",
    "/v1/auth/me",
    "/v1/reports/summary?group_by=day",
    "/v1/reports/denials",
    "/v1/reports/flags",
    "/v1/events/",
    "/v1/exports/events.csv",
    "/manifest",
    "/reviews",
    "/v1/records/",
    "/v1/policies",
    "/diff?against=",
    "/v1/reports/transparency?month=",
    "/v1/log/checkpoint",
    "/v1/log/key",
    "/v1/log/proof/inclusion?seq=",
)


def test_page_is_served_and_uses_the_api(client: TestClient) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert 'id="sign-in"' in html
    assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', html)
    assert sorted(assets) == [
        "/dashboard/static/dashboard.css",
        "/dashboard/static/dashboard.js",
        "/dashboard/static/proof.js",
    ]
    script = client.get("/dashboard/static/dashboard.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/static/dashboard.css").status_code == 200
    for path in API_PATHS:
        assert path in script.text, path
    assert "sessionStorage" in script.text
    assert "innerHTML" not in script.text  # data goes in as text only


def test_nothing_is_loaded_from_elsewhere(client: TestClient) -> None:
    for url in (
        "/dashboard",
        "/dashboard/static/dashboard.js",
        "/dashboard/static/proof.js",
        "/dashboard/static/dashboard.css",
    ):
        body = client.get(url).text
        # The only absolute URL is the SVG namespace name, which browsers never fetch.
        assert re.findall(r"https?://[^\s\"')]+", body) in ([], ["http://www.w3.org/2000/svg"])


def test_every_api_path_the_page_calls_exists() -> None:
    paths = set(create_app().openapi()["paths"])
    for path in (
        "/v1/auth/token",
        "/v1/auth/me",
        "/v1/reports/summary",
        "/v1/reports/denials",
        "/v1/reports/flags",
        "/v1/events/{seq}",
        "/v1/exports/events.csv",
        "/v1/exports/{export_id}/manifest",
        "/v1/events/{seq}/reviews",
        "/v1/records/{record_type}/{record_id}/accesses",
        "/v1/policies",
        "/v1/policies/{version}",
        "/v1/policies/{version}/diff",
        "/v1/reports/transparency",
        "/v1/log/checkpoint",
        "/v1/log/key",
        "/v1/log/proof/inclusion",
    ):
        assert path in paths
