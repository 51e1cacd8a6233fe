"""Headless Chromium for the console's end-to-end tests: Debian's `/usr/bin/chromium`
driven by Playwright (never a browser Playwright downloads).

`make test` installs the Debian packages when they are missing. Without a Chromium the
tests skip and say why; with CI=true that is a failure, never a skip.

`ConsolePage` wraps a Playwright page with what every console test needs: signing in,
waiting for a page's script to finish (`body[data-ready]`), screenshots, and a record of
console errors and failed page scripts, which `assert_clean` turns into a test failure.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from tests.helpers.services import unavailable

CHROMIUM = os.environ.get("TENANTSERVE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# A laptop's width.
VIEWPORT = {"width": 1366, "height": 820}
# Where screenshots go: `make console-screenshots` sets docs/console (linked from
# docs/console.md); other runs keep them out of the tree.
SCREENSHOT_DIR = Path(os.environ.get("CONSOLE_SCREENSHOTS", ".pytest_cache/console-screenshots"))


def require_chromium() -> str:
    """The Chromium executable; skip (fail under CI=true) when it is not installed."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path:
        return path
    unavailable(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium chromium-driver)")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Debian Chromium."""
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class ConsolePage:
    """One browser tab (its own context: its own sessionStorage) on a console server."""

    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)
    # Console errors matching one of these are expected by the test (a 404 it provoked).
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}/console{path}"

    async def open(self, path: str) -> None:
        """Go to a console page and wait until its script has finished loading data."""
        await self.page.goto(self.url(path))
        await self.ready()

    async def ready(self) -> None:
        await self.page.wait_for_selector("body[data-ready='true']", timeout=15_000)

    async def sign_in(self, credential: str, kind: str = "tenant") -> None:
        """Sign in through the sign-in form; lands on the role's home page."""
        await self.open("/signin")
        await self.page.get_by_label(
            "Operator" if kind == "admin" else "Tenant", exact=False
        ).check()
        await self.page.get_by_label("Credential").fill(credential)
        await self.page.get_by_role("button", name="Sign in").click()
        home = "/admin/tenants" if kind == "admin" else "/overview"
        await self.page.wait_for_url(f"**/console{home}")
        await self.ready()

    def allow(self, pattern: str) -> None:
        """Expect console errors matching `pattern` (a request the test wants refused)."""
        self.allowed.append(re.compile(pattern))

    async def screenshot(self, name: str) -> Path:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{name}.png"
        await self.page.screenshot(path=path, full_page=True)
        return path

    def assert_clean(self) -> None:
        """No console error or page script error that the test did not expect."""
        unexpected = [e for e in self.errors if not any(p.search(e) for p in self.allowed)]
        assert not unexpected, f"console errors: {unexpected}"


@asynccontextmanager
async def console_page(browser: Browser, base_url: str) -> AsyncIterator[ConsolePage]:
    """A fresh tab on the console; fails the test on unexpected console errors."""
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = await context.new_page()
    tab = ConsolePage(page=page, base_url=base_url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.errors.append(f"{message.text} ({message.location.get('url', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.errors.append(f"page error: {error}"))
    try:
        yield tab
        tab.assert_clean()
    finally:
        await context.close()
