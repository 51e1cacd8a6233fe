"""Signing in to the console: the credential is checked against the API, a refused one
shows the API's own message, pages carry a strict CSP, and a page opened without a
session sends the browser to the sign-in page (and back after)."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.helpers.browser import console_page
from tests.helpers.server import Running

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_pages_carry_a_strict_content_security_policy(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url) as http:
        r = await http.get("/console/signin")
        root = await http.get("/console")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["cache-control"] == "no-store"
    assert root.status_code == 200 and "Sign in" in root.text


async def test_a_refused_credential_shows_the_apis_message(
    running: Running, browser: Browser
) -> None:
    async with console_page(browser, running.url) as tab:
        tab.allow("401")
        await tab.open("/signin")
        await tab.page.get_by_label("Credential").fill("ts-not-a-real-key")
        await tab.page.get_by_role("button", name="Sign in").click()
        await expect(tab.page.get_by_role("alert")).to_contain_text("invalid API key")
        assert tab.page.url.endswith("/console/signin")


async def test_a_tenant_signs_in_and_out(running: Running, browser: Browser) -> None:
    async with console_page(browser, running.url) as tab:
        await tab.page.goto(tab.url("/keys"))
        await tab.page.wait_for_url("**/console/signin?next=*")
        await tab.page.get_by_label("Credential").fill(running.acme.key)
        await tab.page.get_by_role("button", name="Sign in").click()
        await tab.page.wait_for_url("**/console/keys")  # back where it was going
        await tab.ready()
        await expect(tab.page.locator("#who")).to_contain_text("acme")
        await tab.page.get_by_role("button", name="Sign out").click()
        await tab.page.wait_for_url("**/console/signin")
        await tab.page.goto(tab.url("/overview"))
        await tab.page.wait_for_url("**/console/signin?next=*")


async def test_an_operator_signs_in_with_the_admin_token(
    running: Running, browser: Browser
) -> None:
    from tests.helpers.server import ADMIN_TOKEN

    async with console_page(browser, running.url) as tab:
        await tab.sign_in(ADMIN_TOKEN, kind="admin")
        await expect(tab.page.locator("#who")).to_have_text("operator")
