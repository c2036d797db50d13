"""The browser suite: Debian's Chromium, driven by Playwright, against a live uvicorn server.

Playwright never downloads a browser here. Without /usr/bin/chromium (or without
Playwright) every test skips with the reason; with REQUIRE_BROWSER set (CI) it fails
instead, so a green run means the browser really ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette

from tests.helpers import PASSWORD, ROOT, TABLES, make_settings
from webapp.app import create_app
from webapp.domain.validation import parse_registration
from webapp.migrate import upgrade_to_head
from webapp.models import Account

try:
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Error,
        Page,
        Playwright,
        Response,
        ViewportSize,
        sync_playwright,
    )
except ImportError as exc:  # pragma: no cover - only without the test extras
    PLAYWRIGHT_MISSING: str | None = f"{exc.name} is not installed (pip install -e '.[test]')"
else:
    PLAYWRIGHT_MISSING = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
# axe impacts that fail a test; "minor" and "moderate" are recorded in the report only.
BLOCKING_IMPACTS = ("serious", "critical")
# Chrome's own line for every 4xx/5xx fetch: the browser reporting a status, not a script error.
FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")
CSP_WORDS = "Content Security Policy"
# Runs in every document before the page's own scripts. A CSP violation goes to Python
# through an exposed binding, so it is kept across full page loads; finished htmx
# requests are counted so a test can wait for the swap instead of sleeping.
INIT_SCRIPT = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__reportCspViolation(`${event.violatedDirective} blocked ${event.blockedURI}`);
});
window.__htmxDone = 0;
document.addEventListener("htmx:finally:request", () => { window.__htmxDone += 1; });
"""

ColorScheme = Literal["light", "dark"]
DEFAULT_VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


def _required() -> bool:
    return os.environ.get("REQUIRE_BROWSER", "") not in ("", "0", "false")


def _unavailable(reason: str) -> None:
    if _required():
        pytest.fail(reason + " (REQUIRE_BROWSER is set)")
    pytest.skip(reason)


# -- the live server ----------------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    app: Starlette

    def execute(self, sql: str, **params: object) -> int:
        """Run one statement on the app's own database; the number of rows it touched."""
        with self.app.state.services.db.engine.begin() as connection:
            return int(connection.execute(text(sql), params).rowcount)

    def rows(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        with self.app.state.services.db.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Port 0: the kernel picks a free port; keeping the socket open means nobody takes it.
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(make_app: Callable[[str], Starlette]) -> Iterator[LiveServer]:
    """Serve `make_app(url)` with uvicorn in a thread; `url` is where it will answer, known
    before the app is built (for settings that must name it, such as PUBLIC_URL)."""
    sock = _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = make_app(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the live uvicorn server did not start")
            time.sleep(0.02)
        yield LiveServer(url=url, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="package")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('browser-db') / 'browser.db'}"
    upgrade_to_head(url)
    with serving(lambda _url: create_app(make_settings(url))) as server:
        yield server


@pytest.fixture(autouse=True)
def _empty_database(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "live_server" in request.fixturenames:
        server: LiveServer = request.getfixturevalue("live_server")
        for table in TABLES:
            server.execute(f"DELETE FROM {table}")


# -- the browser --------------------------------------------------------------------


# Package scope, not session: while Playwright's sync API is open, the main thread counts
# as running an event loop, and asyncio.run() in any later test would fail.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    if PLAYWRIGHT_MISSING:
        _unavailable(f"Playwright cannot run: {PLAYWRIGHT_MISSING}")
    if not CHROMIUM.is_file():
        _unavailable(
            f"no Chromium at {CHROMIUM}: install Debian's package with "
            "`apt-get install -y chromium` (Playwright's own download is never used)"
        )
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
    except Error as exc:
        _unavailable(f"{CHROMIUM} would not start: {exc.message.splitlines()[0]}")
    yield chromium
    chromium.close()


# -- axe ----------------------------------------------------------------------------


@dataclass
class AxeReport:
    """Every axe run of the browser suite: violations by impact, per page or swap."""

    runs: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, label: str, violations: list[dict[str, Any]]) -> None:
        counts = self.runs.setdefault(label, Counter())
        for violation in violations:
            counts[violation["impact"] or "unknown"] += 1

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        report = {label: dict(sorted(counts.items())) for label, counts in self.runs.items()}
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="package")
def axe_report() -> Iterator[AxeReport]:
    report = AxeReport()
    yield report
    if report.runs:
        report.write(ARTIFACTS / "axe-report.json")


def _describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        targets = ", ".join(" ".join(node["target"]) for node in violation["nodes"])
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']} at {targets}")
    return "\n".join(lines)


# -- one tab, watched ---------------------------------------------------------------


@dataclass
class Tab:
    """A page plus what it must prove: no stray console error, no CSP violation,
    no full page load where htmx should swap, and axe-clean after every change."""

    page: Page
    server: LiveServer
    report: AxeReport
    axe: Any
    console_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    # Statuses this flow provokes on purpose; Chrome logs each as "Failed to load resource".
    expected_statuses: set[int] = field(default_factory=set)
    loads: int = 0
    _time_origin: float | None = None
    _loads_at_mark: int = 0

    # wiring

    def _on_console(self, message: ConsoleMessage) -> None:
        if CSP_WORDS in message.text:
            self.csp_violations.append(message.text)
        if message.type == "error":
            self.console_errors.append(message.text)

    def _on_csp_violation(self, description: str) -> None:
        self.csp_violations.append(description)

    def _on_page_error(self, error: Error) -> None:
        self.console_errors.append(f"uncaught: {error.message}")

    def _on_load(self, _page: Page) -> None:
        self.loads += 1

    # navigation

    def url(self, path: str = "/") -> str:
        return self.server.url + path

    def goto(self, path: str, *, status: int = 200) -> Response:
        response = self.page.goto(self.url(path))
        assert response is not None
        assert response.status == status, f"GET {path}: {response.status}"
        return response

    @property
    def path(self) -> str:
        return self.page.url.removeprefix(self.server.url)

    # proofs

    def check_axe(self, label: str) -> None:
        """axe-core on the page as it is now: no serious or critical violation."""
        # Let the flash fade in first: axe would measure a half-transparent message.
        self.page.evaluate("Promise.all(document.getAnimations().map((a) => a.finished))")
        results = self.axe.run(self.page)
        violations: list[dict[str, Any]] = results.response["violations"]
        self.report.add(label, violations)
        blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
        assert not blocking, f"axe, {label}:\n{_describe(blocking)}"

    def mark_document(self) -> None:
        """Remember this document: a marker on window, its time origin, the load count."""
        self.page.evaluate("window.__marker = 'still the same document'")
        self._time_origin = self.page.evaluate("performance.timeOrigin")
        self._loads_at_mark = self.loads

    def assert_same_document(self) -> None:
        """No full page load since mark_document()."""
        assert self._time_origin is not None, "mark_document() first"
        state = self.page.evaluate(
            """() => ({
                marker: window.__marker,
                origin: performance.timeOrigin,
                navigations: performance.getEntriesByType('navigation').length,
            })"""
        )
        assert state == {
            "marker": "still the same document",
            "origin": self._time_origin,
            "navigations": 1,
        }
        assert self.loads == self._loads_at_mark, "a full page load happened"

    def expect_statuses(self, *statuses: int) -> None:
        self.expected_statuses.update(statuses)

    def assert_clean(self) -> None:
        """No console error and no CSP violation, except Chrome's note of an expected status."""
        unexpected = []
        for line in self.console_errors:
            failed = FAILED_LOAD.match(line)
            if failed and int(failed.group(1)) in self.expected_statuses:
                continue
            unexpected.append(line)
        assert not unexpected, f"console errors: {unexpected}"
        assert not self.csp_violations, f"CSP violations: {self.csp_violations}"

    # the forms

    def submit(self, form: str, path: str, *, press_enter_in: str | None = None) -> Response:
        """Submit `form` (by its button, or Enter in a field) and wait for htmx to finish.

        Returns the response to the htmx request for `path`; the swap is done when
        this returns. Not for responses that make the browser load another page.
        """
        before = self.page.evaluate("window.__htmxDone")
        with self.page.expect_response(lambda r: r.url == self.url(path)) as info:
            if press_enter_in:
                self.page.press(press_enter_in, "Enter")
            else:
                self.page.locator(f"{form} button[type=submit]").click()
        self.page.wait_for_function("(before) => window.__htmxDone > before", arg=before)
        return info.value

    def submit_and_load(self, form: str, path: str, *, lands_on: str) -> Response:
        """Submit `form`; its response (HX-Redirect) makes the browser load `lands_on`."""
        with (
            self.page.expect_response(lambda r: r.url == self.url(path)) as info,
            self.page.expect_navigation(url=self.url(lands_on)),
        ):
            self.page.locator(f"{form} button[type=submit]").click()
        return info.value

    def sign_in(self, username: str, password: str = PASSWORD, *, lands_on: str = "/") -> None:
        """Sign in through the form on the page (going to /login first unless there)."""
        if not self.path.startswith("/login"):
            self.goto("/login")
        self.page.fill("#login-username", username)
        self.page.fill("#login-password", password)
        response = self.submit_and_load("#login-form", "/login", lands_on=lands_on)
        assert response.status == 200
        assert response.headers["hx-redirect"] == lands_on


def create_account(
    server: LiveServer, username: str, email: str | None = None, password: str = PASSWORD
) -> Account:
    """An account made directly through the domain, for flows that start signed in."""
    fields = {
        "username": username,
        "email": email or f"{username.lower()}@example.com",
        "password": password,
        "confirm_password": password,
    }
    services = server.app.state.services
    registration = parse_registration(
        fields, min_password_length=services.settings.password_min_length
    )
    # The domain is async; Playwright's sync API owns this thread's event loop, so
    # run the registration on a loop of its own in another thread.
    with ThreadPoolExecutor(max_workers=1) as runner:
        account: Account = runner.submit(
            asyncio.run, services.accounts.register(registration)
        ).result()
    return account


@pytest.fixture
def open_tab(
    browser: Browser, live_server: LiveServer, axe_report: AxeReport
) -> Iterator[Callable[..., Tab]]:
    """Open a tab in a fresh browser context (own cookies); its checks run at teardown too."""
    opened: list[tuple[BrowserContext, Tab]] = []

    def open_one(
        viewport: ViewportSize = DEFAULT_VIEWPORT, color_scheme: ColorScheme = "light"
    ) -> Tab:
        context = browser.new_context(
            viewport=viewport, color_scheme=color_scheme, reduced_motion="no-preference"
        )
        context.set_default_timeout(5_000)
        page = context.new_page()
        watched = Tab(page=page, server=live_server, report=axe_report, axe=Axe())
        page.expose_function("__reportCspViolation", watched._on_csp_violation)
        page.add_init_script(INIT_SCRIPT)
        page.on("console", watched._on_console)
        page.on("pageerror", watched._on_page_error)
        page.on("load", watched._on_load)
        opened.append((context, watched))
        return watched

    yield open_one
    for context, watched in opened:
        context.close()
        # Whatever a test did after its last explicit check still has to be clean.
        watched.assert_clean()


@pytest.fixture
def tab(open_tab: Callable[..., Tab]) -> Tab:
    return open_tab()
