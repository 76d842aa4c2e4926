"""Browser tests: Debian's Chromium driven by Playwright against a real server with the demo.

They run only when asked (`AUDIT_BROWSER_TESTS=1`, which `make test-browser` sets); asked
for, a missing /usr/bin/chromium or Playwright is a failure, never a skip. Playwright's own
browser downloads are never used (no `playwright install`): the system Chromium is launched
headless with `--no-sandbox`.

What a test gets:

- `live_server` (session): `access-audit migrate`, `demo`, then `serve` on a free port of
  127.0.0.1, on a SQLite database in a temporary folder; `base_url` is its URL;
- `browser` (session): the Chromium;
- `page`: a fresh context at 1280x800; `phone_page`: one at 390x844 (touch, mobile);
  `open_page(width, height, **context_options)` makes more;
- `guard`: every page those fixtures open fails its test if it requests anything from
  another origin than the server, or if its console shows an error or the page throws,
  unless the test expects it (`guard.expect_console_error(regex)` or the marker
  `@pytest.mark.expect_console_error(regex)`);
- helpers: `sign_in`, `axe_check`, `screenshot` (to bench/results/screens/),
  `no_sideways_scroll`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.helpers import CHROMIUM, DESKTOP, PHONE, ROOT, SCREENS, TIMEOUT_MS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, Route

ENABLED = os.environ.get("AUDIT_BROWSER_TESTS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "expect_console_error(pattern): a console error or page error matching the regular "
        "expression is expected by this browser test (others still fail it)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(
        reason="browser tests run only with AUDIT_BROWSER_TESTS=1 (`make test-browser`)"
    )
    for item in items:
        if here in item.path.parents:
            item.add_marker(skip)


def _playwright_missing() -> str | None:
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import axe_playwright_python.sync_playwright  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        problems.append(f"{error} (make install-test)")
    return "; ".join(problems) or None


# --- the server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveServer:
    """`access-audit serve` on a database loaded by `access-audit demo`."""

    url: str
    env: dict[str, str]  # the AUDIT_* settings it runs with (for more CLI calls)
    workdir: Path
    log: Path  # its stdout and stderr
    demo_output: str  # what `access-audit demo` printed (the logins, the client)
    demo_seconds: float  # migrate + demo


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cli() -> list[str]:
    return [str(Path(sys.executable).parent / "access-audit")]


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The real server on 127.0.0.1 with the demo loaded; stopped at the end of the session
    (its log, the tail of which is shown if it fails, is copied beside the screenshots)."""
    missing = _playwright_missing()
    if missing:
        pytest.fail(f"AUDIT_BROWSER_TESTS=1 but {missing}", pytrace=False)
    workdir = tmp_path_factory.mktemp("browser-server")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")},
        "AUDIT_DATABASE_URL": f"sqlite:///{workdir / 'audit.db'}",
        "AUDIT_POLICY_DIR": str(ROOT / "policies"),
        "AUDIT_STATE_DIR": str(workdir),
        "AUDIT_SECRET_KEY": "browser-test-secret-key-that-is-long-enough-0123",
        "AUDIT_SIGNING_KEY_FILE": str(workdir / "signing.pem"),
        "AUDIT_ARGON2_TIME_COST": "1",
        "AUDIT_ARGON2_MEMORY_COST": "1024",
        # Every browser signs in from 127.0.0.1, many times a run.
        "AUDIT_LOGIN_RATE_LIMIT": "100000",
    }
    started = time.monotonic()
    demo_output = ""
    for command in (["migrate"], ["demo"]):
        done = subprocess.run(
            [*_cli(), *command], env=env, cwd=workdir, capture_output=True, text=True,
            timeout=180, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(
                f"access-audit {command[0]} exited {done.returncode}:\n{done.stderr[-4000:]}",
                pytrace=False,
            )
        demo_output = done.stdout
    demo_seconds = time.monotonic() - started
    port = _free_port()
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_cli(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the server did not get ready (exit {process.poll()}):\n{_tail(log)}",
                    pytrace=False,
                )
            time.sleep(0.2)
        yield LiveServer(base, env, workdir, log, demo_output, demo_seconds)
        died = process.poll()
        if died is not None:
            pytest.fail(f"the server exited ({died}) during the run:\n{_tail(log)}", pytrace=False)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        SCREENS.mkdir(parents=True, exist_ok=True)
        if log.exists():
            shutil.copyfile(log, SCREENS / "server.log")


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    return live_server.url


# --- the browser --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright (never a downloaded browser)."""
    missing = _playwright_missing()
    if missing:
        pytest.fail(f"AUDIT_BROWSER_TESTS=1 but {missing}", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # its default is 5 s, short on a busy machine
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@dataclass
class Guard:
    """What the pages of one test did that they should not have: requests to another
    origin (aborted, never sent), console errors and uncaught page errors."""

    origin: str
    foreign_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)

    def expect_console_error(self, pattern: str) -> None:
        """A console error (or page error) matching `pattern` is expected in this test."""
        self.expected.append(re.compile(pattern))

    def is_foreign(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return False
        return f"{parts.scheme}://{parts.netloc}" != self.origin

    def watch(self, context: BrowserContext) -> None:
        def route(route: Route) -> None:
            self.foreign_requests.append(f"{route.request.method} {route.request.url}")
            route.abort("blockedbyclient")

        def request(request: Request) -> None:
            if self.is_foreign(request.url):  # what routing cannot see (e.g. a worker's)
                line = f"{request.method} {request.url}"
                if line not in self.foreign_requests:
                    self.foreign_requests.append(line)

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                where = message.location.get("url", "")
                self.console_errors.append(f"{message.text} ({where})" if where else message.text)

        def attach(page: Page) -> None:
            self.pages.append(page)
            page.on("request", request)
            page.on("console", console)
            page.on("pageerror", lambda error: self.page_errors.append(str(error)))

        context.route(self.is_foreign, route)
        context.on("page", attach)

    def problems(self) -> list[str]:
        for page in self.pages:  # let events still on their way arrive
            if not page.is_closed():
                try:
                    page.evaluate("0")
                except Exception:  # a page that went away has nothing more to say
                    pass
        lines = [f"request to another origin: {url}" for url in self.foreign_requests]
        for kind, messages in (("console error", self.console_errors),
                               ("page error", self.page_errors)):  # fmt: skip
            lines += [
                f"{kind}: {text}"
                for text in messages
                if not any(p.search(text) for p in self.expected)
            ]
        return lines


_GUARD = pytest.StashKey[Guard]()


@pytest.fixture
def guard(request: pytest.FixtureRequest, base_url: str) -> Guard:
    """This test's guard (see `Guard`); checked when the test body ends."""
    found = Guard(origin=base_url)
    for marker in request.node.iter_markers("expect_console_error"):
        found.expect_console_error(*marker.args)
    request.node.stash[_GUARD] = found
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A guard's findings fail the test itself (not its teardown)."""
    result = yield
    found = item.stash.get(_GUARD, None)
    if found is not None:
        problems = found.problems()
        if problems:
            raise AssertionError("the page did what it must not:\n  " + "\n  ".join(problems))
    return result


OpenPage = Callable[..., "Page"]


@pytest.fixture
def open_page(browser: Browser, guard: Guard) -> Iterator[OpenPage]:
    """`open_page(width, height, **context_options)`: a page in a fresh context of that
    viewport, watched by `guard`; every context is closed after the test."""
    contexts: list[BrowserContext] = []

    def make(width: int = DESKTOP[0], height: int = DESKTOP[1], **options: Any) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height}, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        guard.watch(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page: OpenPage) -> Page:
    """A fresh desktop page (1280x800)."""
    return open_page(*DESKTOP)


@pytest.fixture
def phone_page(open_page: OpenPage) -> Page:
    """A fresh phone page (390x844, touch, mobile viewport)."""
    return open_page(*PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
