"""Smoke tests of the dashboard in a real browser, true of any version of the page: the
sign-in page is accessible and self-contained, a wrong password is refused on the page,
and an oversight officer gets to the board. Screenshots go to bench/results/screens/.

The page-specific tests build on the same fixtures (conftest.py) and helpers (helpers.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import Guard
from tests.browser.helpers import (
    DEMO_PASSWORD,
    OFFICER,
    OTHER_OFFICER,
    axe_check,
    no_sideways_scroll,
    screenshot,
    sign_in,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

# What Chromium logs for a refused request (the 401 of a wrong password).
REFUSED = r"status of 401"


def test_sign_in_page_passes_axe(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/dashboard")
    page.get_by_label("Username").wait_for()
    axe_check(page, "sign-in-desktop")
    screenshot(page, "sign-in-desktop")


def test_sign_in_page_on_a_phone(phone_page: Page, base_url: str) -> None:
    phone_page.goto(f"{base_url}/dashboard")
    phone_page.get_by_label("Username").wait_for()
    axe_check(phone_page, "sign-in-phone")
    no_sideways_scroll(phone_page)
    screenshot(phone_page, "sign-in-phone")


def test_the_page_loads_nothing_from_other_hosts(page: Page, base_url: str) -> None:
    requested: list[Request] = []
    page.on("request", lambda request: requested.append(request))
    page.goto(f"{base_url}/dashboard", wait_until="networkidle")
    urls = [r.url for r in requested]
    origin = urlsplit(base_url)
    elsewhere = [
        url
        for url in urls
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != origin.netloc
    ]
    assert elsewhere == []
    # The page and what it is made of were requested, from the server.
    assert any(urlsplit(url).path.endswith(".js") for url in urls), urls
    assert any(urlsplit(url).path.endswith(".css") for url in urls), urls


@pytest.mark.expect_console_error(REFUSED)
def test_a_wrong_password_shows_an_error_and_no_board(page: Page, base_url: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, base_url, OTHER_OFFICER, "not-the-password", wait=False)
    # An alert with something in it says so (whatever its words).
    expect(page.get_by_role("alert").filter(has_text=re.compile(r"\S")).first).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(page.get_by_label("Password")).to_be_visible()
    screenshot(page, "sign-in-refused-desktop")


def test_an_oversight_officer_signs_in_and_the_board_appears(page: Page, base_url: str) -> None:
    sign_in(page, base_url, OFFICER, DEMO_PASSWORD)
    page.wait_for_load_state("networkidle")  # the board's data has arrived
    screenshot(page, "board-desktop")


def test_the_guard_catches_other_hosts_and_console_errors(browser: Browser) -> None:
    """The harness itself: a page that asks another host for an image and throws is
    reported on both counts (and the request never leaves the machine)."""
    guard = Guard(origin="http://127.0.0.1:9")
    context = browser.new_context()
    try:
        guard.watch(context)
        page = context.new_page()
        page.set_content(
            '<img src="http://elsewhere.invalid/pixel.png" alt="">'
            "<script>console.error('on purpose'); setTimeout(() => { throw new Error('boom'); })"
            "</script>"
        )
        page.wait_for_timeout(200)
        problems = "\n".join(guard.problems())
    finally:
        context.close()
    assert "request to another origin: GET http://elsewhere.invalid/pixel.png" in problems
    assert "console error: on purpose" in problems
    assert "page error: boom" in problems
