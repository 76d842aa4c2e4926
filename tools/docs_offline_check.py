"""/docs and /redoc in a real browser with no network but the service's: both render, the
Authorize dialog offers the client-credentials flow, a client signs in with it and calls
`GET /v1/auth/me` from Swagger UI, and the page's Content-Security-Policy blocks nothing
that the page needs. By hand, not in CI (it needs Chromium and Playwright for Python):

    apt-get install chromium; pip install playwright      # never `playwright install`
    make run                                              # prints a demo client's id and secret
    python tools/docs_offline_check.py http://127.0.0.1:8000 CLIENT_ID CLIENT_SECRET [--shots DIR]

Exit 1 with what failed. Every request for another origin is aborted and reported.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Page, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

REPORT_CSP = (
    "document.addEventListener('securitypolicyviolation', e =>"
    " console.error('CSP blocked', e.violatedDirective, e.blockedURI))"
)
# ReDoc's sidebar shows Redocly's logo from its CDN: the CSP blocks it, the text stays.
EXPECTED_BLOCKS = ("cdn.redoc.ly",)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base")
    parser.add_argument("client_id")
    parser.add_argument("client_secret")
    parser.add_argument("--shots", type=Path, help="save screenshots here")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    outside: list[str] = []
    errors: list[str] = []

    def route(request_route: Route) -> None:
        url = request_route.request.url
        if url.startswith((base + "/", "blob:", "data:")):
            request_route.continue_()
        else:
            if not url.startswith(tuple(f"https://{host}" for host in EXPECTED_BLOCKS)):
                outside.append(url)
            request_route.abort()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not any(h in message.text for h in EXPECTED_BLOCKS):
            errors.append(message.text)

    def shot(page: Page, name: str) -> None:
        if args.shots:
            args.shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.shots / f"{name}.png"))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium, headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", route)
        context.add_init_script(REPORT_CSP)
        page = context.new_page()
        page.on("console", console)
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

        page.goto(f"{base}/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
        shot(page, "docs")
        page.click("button.authorize")
        dialog = page.locator(".modal-ux")
        dialog.wait_for()
        text = dialog.inner_text()
        flows = re.findall(r"Flow:\s*(\w+)", text)
        token_urls = set(re.findall(r"Token URL:\s*(\S+)", text))
        if "clientCredentials" not in flows or token_urls != {"/v1/auth/token"}:
            errors.append(f"the Authorize dialog offers {flows} at {token_urls}")
        flow = dialog.locator(".auth-container").filter(has_text="clientCredentials")
        flow.locator("input[id^=client_id]").fill(args.client_id)
        flow.locator("input[id^=client_secret]").fill(args.client_secret)
        flow.locator("button.authorize").click()
        try:
            flow.locator("button", has_text="Logout").wait_for(timeout=10_000)  # signed in
        except PlaywrightTimeout:
            errors.append(f"no token from the client-credentials flow: {flow.inner_text()!r}")
        else:
            shot(page, "docs-authorized")
            dialog.locator("button.close-modal").first.click()
            me = page.locator("#operations-auth-who_am_i_v1_auth_me_get")
            me.locator(".opblock-summary").click()
            me.locator("button.try-out__btn").click()
            me.locator("button.execute").click()
            answer = me.locator(".live-responses-table tbody .response-col_status").first
            answer.wait_for(timeout=10_000)
            if answer.inner_text().strip() != "200":
                errors.append(f"GET /v1/auth/me from /docs answered {answer.inner_text()!r}")
            shot(page, "docs-me")

        page.goto(f"{base}/redoc")
        page.wait_for_selector("h1", timeout=20_000)
        if "access-audit" not in page.inner_text("h1"):
            errors.append("/redoc shows no title")
        page.fill("input[placeholder='Search...']", "decisions")
        page.wait_for_timeout(1_000)  # the search index is built in a worker
        shot(page, "redoc")
        browser.close()

    for url in outside:
        print(f"asked for another origin: {url}")
    for error in errors:
        print(f"error: {error}")
    if outside or errors:
        return 1
    print("/docs and /redoc render offline; client credentials work from /docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
