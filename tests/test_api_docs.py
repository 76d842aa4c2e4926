"""/docs and /redoc work without the internet: every asset they load is the service's own
(FastAPI's defaults load Swagger UI and ReDoc from a CDN), each answers 200 with its media
type, and their Content-Security-Policy allows nothing else, not even an inline script it
does not name by hash."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

PAGES = ["/docs", "/redoc", "/docs/oauth2-redirect"]
JAVASCRIPT = ("text/javascript", "application/javascript")


class Assets(HTMLParser):
    """The URLs a page loads (`src`, `href`, ReDoc's `spec-url`) and the bodies of its inline
    scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_inline = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "spec-url"):
            if found.get(name):
                self.urls.append(str(found[name]))
        self._in_inline = tag == "script" and "src" not in found

    def handle_endtag(self, tag: str) -> None:
        self._in_inline = False

    def handle_data(self, data: str) -> None:
        if self._in_inline:
            self.inline.append(data)


def parse(html: str) -> Assets:
    assets = Assets()
    assets.feed(html)
    return assets


def same_origin(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//")


def csp(header: str) -> dict[str, list[str]]:
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_pages_load_only_the_services_own_assets(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text  # no CDN, no web fonts: nothing with a host
    # Swagger UI's page names the document in its inline script, ReDoc's in `spec-url`.
    urls = parse(page.text).urls + re.findall(r"\burl: '([^']+)'", page.text)
    assert "/openapi.json" in urls
    for url in urls:
        assert same_origin(url), url
        served = client.get(url)
        assert served.status_code == 200, url
        media = served.headers["content-type"].split(";")[0]
        if url.endswith(".js"):
            assert media in JAVASCRIPT, url
        elif url.endswith(".css"):
            assert media == "text/css", url
        elif url.endswith(".png"):
            assert media == "image/png", url
        else:
            assert url == "/openapi.json"
            assert media == "application/json"
    scripts = [url for url in urls if url.endswith(".js")]
    assert scripts == (
        ["/docs/assets/swagger-ui-bundle.js"] if path == "/docs"
        else ["/docs/assets/redoc.standalone.js"]
    )  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_the_pages_csp_allows_the_service_and_their_own_inline_scripts_only(
    client: TestClient, path: str
) -> None:
    page = client.get(path)
    assert page.status_code == 200
    policy = csp(page.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    for directive, values in policy.items():
        assert all(v.startswith("'") or v in ("data:", "blob:") for v in values), directive
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in parse(page.text).inline
    }
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    assert set(policy["script-src"]) == {"'self'", *hashes}
    assert page.headers["x-content-type-options"] == "nosniff"


def test_swagger_ui_sends_the_document_to_no_validator(client: TestClient) -> None:
    """Swagger UI's default shows a badge from a public validator, given the document's URL."""
    assert '"validatorUrl": null' in client.get("/docs").text


def test_the_docs_need_no_token_and_are_not_in_the_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in PAGES:
        assert path not in paths
        assert client.get(path).status_code == 200
