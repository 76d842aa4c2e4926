"""What browser tests call: who signs in, and the checks (`sign_in`, `axe_check`,
`screenshot`, `no_sideways_scroll`). The fixtures are in conftest.py beside this file.

Import from here in a test: `from tests.browser.helpers import OFFICER, sign_in, ...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENS = ROOT / "bench" / "results" / "screens"

DEMO_PASSWORD = "mission-demo-password"  # app/demo.py: public, development only
OFFICER = "dps.okafor"  # oversight
OTHER_OFFICER = "gov.lindqvist"  # oversight
AUDITOR = "auditor.park"
ADMIN = "admin"

DESKTOP = (1280, 800)
PHONE = (390, 844)
TIMEOUT_MS = 15_000  # a shared 2-core machine: generous, but a hang still ends


def sign_in(
    page: Page, base_url: str, username: str, password: str = DEMO_PASSWORD, *, wait: bool = True
) -> None:
    """Open /dashboard and sign in through its form (fields labelled "Username" and
    "Password", button "Sign in"); with `wait`, until the board shows: a "Sign out"
    button visible and the password field gone."""
    page.goto(f"{base_url}/dashboard")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if wait:
        wait_for_board(page)


def wait_for_board(page: Page) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_hidden()


def axe_check(page: Page, name: str) -> list[dict[str, Any]]:
    """Run axe-core (the copy inside axe-playwright-python) on the page as it is; fail
    listing every violation of impact serious or critical. Returns all violations (the
    lesser ones too) for a test that wants to look; the whole result is saved as
    bench/results/screens/<name>.axe.json."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    violations: list[dict[str, Any]] = results.response["violations"]
    SCREENS.mkdir(parents=True, exist_ok=True)
    (SCREENS / f"{name}.axe.json").write_text(json.dumps(violations, indent=1))
    bad = [v for v in violations if v.get("impact") in ("serious", "critical")]
    if bad:
        lines = []
        for violation in bad:
            lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
            for node in violation["nodes"]:
                target = " ".join(str(t) for t in node["target"])
                lines.append(f"    {target}: {node.get('html', '')[:160]}")
        pytest.fail(f"axe on {name}: serious or critical violations:\n" + "\n".join(lines))
    return violations


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG at bench/results/screens/<name>.png (CI keeps the folder)."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def no_sideways_scroll(page: Page) -> None:
    """The page is no wider than its viewport (nothing scrolls sideways).

    Against the viewport the context was made with as well as `window.innerWidth`: in a
    mobile context (`is_mobile=True`) Chromium zooms out to fit a page that is too wide,
    and `innerWidth` grows with it (a 612 px wide board gave 612 = 612 at 390 px)."""
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    viewport = page.viewport_size["width"] if page.viewport_size else inner
    assert width <= min(inner, viewport), (
        f"the page is {width} px wide in a {viewport} px viewport (innerWidth {inner})"
    )
