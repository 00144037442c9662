"""Browser fixtures: Debian's chromium, driven by Playwright, against a real `manage.py runmonitor` stack.

Exposes `site` (one runmonitor for the browser tests, on SQLite and the filesystem broker, with an admin, an
editor and a viewer), `browser`, `pages` (pages signed in per role and colour scheme, closed after
each test, with `screenshot()`), `peers` (servers for the monitor to probe, on 127.0.0.1 in a
background event loop) and the page helpers the scenarios share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.peers.services import ROOT, Stack
from tests.test_runmonitor import Monitor, running_monitor

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # the suite still collects; `browser` skips (fails under CI=true)
    sync_playwright = expect = None

CHROMIUM = "/usr/bin/chromium"  # Debian's package: Playwright's own browser download is never used
# Without the background-networking flags chromium calls home (updates, sync, field trials),
# and the network here is closed: each attempt would hang until it times out.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # tests run as root, where chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
WAIT_MS = 20_000  # default wait for an element or a navigation, on a slow shared 2-core machine
PROBE_WAIT_MS = 60_000  # wait for a probe's outcome to reach a page that refreshes itself every 15 s
PASSWORD = "a long browser password 7"
ADMIN, EDITOR, VIEWER = "admin", "eddie", "vera"  # the superuser, and a user in each role group
SCREENSHOTS = ROOT / "docs" / "screenshots"  # updated only with PORTWATCH_SCREENSHOTS=1, so CI leaves it alone
FAILED = pytest.StashKey[bool]()

USERS_SCRIPT = f"""
from django.contrib.auth.models import Group, User
User.objects.create_superuser({ADMIN!r}, password={PASSWORD!r})
for name, group in (({EDITOR!r}, "editors"), ({VIEWER!r}, "viewers")):
    User.objects.create_user(name, password={PASSWORD!r}).groups.add(Group.objects.get(name=group))
"""


@dataclass
class Site:
    """The running stack: its address, and the data directory and database that its processes share."""

    stack: Stack
    monitor: Monitor

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor.port}"


# Package scope, not session: Playwright's sync API runs an event loop in the main thread until it
# stops, and every asyncio test after it then failed with "Runner.run() cannot be called from a
# running event loop" (171 of them in the first full run). Stopped when tests/browser/ is done.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    need(sync_playwright is not None, "playwright is not installed (requirements-dev.txt)")
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (Debian package chromium)")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield launched
        launched.close()


@pytest.fixture(scope="package")
def site(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Start `manage.py runmonitor` once for the browser tests, as a user runs it, with our users created first.

    The superuser exists before runmonitor starts, so its `ensureadmin` creates none.
    """
    stack = Stack(tmp_path_factory.mktemp("browser-stack"))
    stack.migrate()
    stack.django(USERS_SCRIPT)
    with running_monitor(stack) as monitor:
        monitor.wait_until_up()
        yield Site(stack, monitor)
        monitor.stop(signal.SIGTERM)


@pytest.fixture(scope="package")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="package")
def sessions(browser: Browser, site: Site) -> dict[str, Any]:
    """Cookies per user, each got once by signing in through the login page."""
    return {}


class Pages:
    """Opens pages in fresh browser contexts, signed in as a user or anonymous, and closes them all at the end."""

    def __init__(self, browser: Browser, site: Site, sessions: dict[str, Any], shots_dir: Path) -> None:
        self.browser, self.site, self.sessions, self.shots_dir = browser, site, sessions, shots_dir
        self.contexts: list[BrowserContext] = []

    def new(self, user: str | None = None, *, scheme: str = "light") -> Page:
        """Return a blank page in a context of its own: `user`'s session (None: anonymous), `scheme` colours."""
        state = self._session(user) if user else None
        context = self.browser.new_context(
            base_url=self.site.base_url, viewport=VIEWPORT, color_scheme=scheme, storage_state=state
        )
        context.set_default_timeout(WAIT_MS)
        context.set_default_navigation_timeout(WAIT_MS)
        self.contexts.append(context)
        return context.new_page()

    def open(self, path: str, user: str | None = None, *, scheme: str = "light") -> Page:
        page = self.new(user, scheme=scheme)
        page.goto(path)
        return page

    def _session(self, user: str) -> Any:
        if user not in self.sessions:
            page = self.new()
            log_in(page, user)
            expect(page).not_to_have_url(re.compile(r"/login/"))
            self.sessions[user] = page.context.storage_state()
            self.contexts.remove(page.context)
            page.context.close()
        return self.sessions[user]

    def screenshot(self, page: Page, name: str, *, publish: bool = True) -> Path:
        """Save a full-page PNG in the session's temporary folder; with `publish`, in docs/screenshots/ if asked to."""
        path = self.shots_dir / f"{name}.png"
        page.screenshot(path=path, full_page=True, animations="disabled")
        if publish and os.environ.get("PORTWATCH_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)
        return path

    def screenshot_schemes(self, path: str, user: str | None, name: str, ready: str) -> None:
        """Screenshot `path` in light and in dark colours as `name`-light/-dark, once `ready` (a selector) shows."""
        for scheme in ("light", "dark"):
            page = self.open(path, user, scheme=scheme)
            expect(page.locator(ready).first).to_be_visible()
            self.screenshot(page, f"{name}-{scheme}")

    def close(self, failed_test: str | None) -> None:
        """Close every context; after a failure, keep a picture of each page that was open, for the report."""
        for number, context in enumerate(self.contexts):
            with contextlib.suppress(Exception):  # a picture must not hide the test's own failure
                if failed_test:
                    for page in context.pages:
                        path = self.shots_dir / f"failed-{failed_test}-{number}.png"
                        page.screenshot(path=path, full_page=True)
                        print(f"page {page.url} at the failure: {path}")
            context.close()


@pytest.fixture
def pages(
    request: pytest.FixtureRequest, browser: Browser, site: Site, sessions: dict[str, Any], shots_dir: Path
) -> Iterator[Pages]:
    opened = Pages(browser, site, sessions, shots_dir)
    yield opened
    opened.close(request.node.name if request.node.stash.get(FAILED, False) else None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Remember a failed test in its stash, so `pages` can keep pictures of what the browser showed."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


# Page helpers ------------------------------------------------------------------------------------


def log_in(page: Page, user: str, password: str = PASSWORD) -> None:
    """Sign in through the login page, as a person would: labels, then the button."""
    page.goto("/login/")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def service_row(page: Page, name: str):
    """Return the overview's row for the service called `name`."""
    return page.locator("tr", has=page.get_by_role("link", name=name, exact=True))


def add_service(page: Page, **fields: str) -> int:
    """Fill the Add service form (`fields` by Django's default ids, without `id_`), save, and return the new id.

    A select gets its option by value; anything else is typed.
    """
    page.goto("/services/new")
    for name, value in fields.items():
        field = page.locator(f"#id_{name}")
        if field.evaluate("element => element.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/services/\d+/$"))
    return int(re.search(r"/services/(\d+)/$", page.url)[1])


# Servers to probe --------------------------------------------------------------------------------


class PeerLoop:
    """An event loop in a thread for the servers the monitor probes: Playwright's sync API owns the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="browser-peers", daemon=True)
        self.thread.start()
        self.running: list[Any] = []

    def run(self, coroutine: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def start(self, server: Any) -> Any:
        """Enter an async context manager (a server) on the loop; return what it yields."""
        value = self.run(server.__aenter__())
        self.running.append(server)
        return value

    def stop(self, server: Any) -> None:
        self.running.remove(server)
        self.run(server.__aexit__(None, None, None))

    def close(self) -> None:
        for server in reversed(self.running):
            with contextlib.suppress(Exception):
                self.stop(server)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="package")
def peers() -> Iterator[PeerLoop]:
    loop = PeerLoop()
    yield loop
    loop.close()
