"""The operator console in a real browser: a tier change made on a tenant's page shows up in
the audit log (and the chain verifies), tenants are created and suspended from the console
(the suspended tenant's key is then refused by the API), the pools page shows the engine's
replica, a model version is registered and deprecated, and a tenant's API key is no admin
credential. Each page is screenshotted (`CONSOLE_SCREENSHOTS`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Dialog, expect

from tests.helpers.browser import console_page
from tests.helpers.server import ADMIN_TOKEN, Running

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _accept(dialog: Dialog) -> None:
    await dialog.accept()


async def test_a_tenant_api_key_is_refused_as_the_admin_credential(
    running: Running, browser: Browser
) -> None:
    async with console_page(browser, running.url) as tab:
        tab.allow("401")
        await tab.open("/signin")
        await tab.page.get_by_label("Operator", exact=False).check()
        await tab.page.get_by_label("Credential").fill(running.acme.key)
        await tab.page.get_by_role("button", name="Sign in").click()
        await expect(tab.page.get_by_role("alert")).to_contain_text("invalid admin token")
        assert tab.page.url.endswith("/console/signin")


async def test_a_tier_change_on_the_tenant_page_appears_in_the_verified_audit_log(
    running: Running, browser: Browser
) -> None:
    tenant_id = running.globex.id
    async with console_page(browser, running.url) as tab:
        await tab.sign_in(ADMIN_TOKEN, kind="admin")
        await tab.page.get_by_role("link", name="globex").click()
        await tab.page.wait_for_url(f"**/console/admin/tenants/{tenant_id}")
        await tab.ready()
        await tab.page.get_by_label("Tier").select_option("premium")
        await tab.page.get_by_role("button", name="Save settings").click()
        await expect(tab.page.locator("#notice")).to_have_text("Settings saved.")
        await expect(tab.page.locator("#facts")).to_contain_text("premium")
        await tab.screenshot("admin-tenant")

        await tab.open("/admin/audit")
        await tab.page.get_by_label("Action").fill("tenant.update")
        await tab.page.get_by_label("Target").fill(tenant_id)
        await tab.page.get_by_role("button", name="Filter").click()
        rows = tab.page.locator("#entries tbody tr")
        await expect(rows).to_have_count(1)
        cells = rows.first.locator("td")
        await expect(cells.nth(2)).to_have_text("admin")
        await expect(cells.nth(3)).to_have_text("tenant.update")
        await expect(cells.nth(4)).to_have_text(tenant_id)
        await expect(cells.nth(5)).to_have_text('{"tier":{"from":"standard","to":"premium"}}')
        await tab.page.get_by_role("button", name="Verify chain").click()
        await expect(tab.page.locator("#verify-result")).to_contain_text("Chain intact")
        await expect(tab.page.get_by_role("button", name="Newest")).to_be_disabled()
        await tab.page.get_by_label("Action").fill("")
        await tab.page.get_by_label("Target").fill("")
        await tab.page.get_by_role("button", name="Filter").click()
        await expect(rows).not_to_have_count(1)  # the unfiltered page has replaced the one row
        change = rows.filter(has_text="tenant.update").filter(has_text=tenant_id)
        await expect(change).to_have_count(1)
        seqs = [int(seq) for seq in await rows.locator("td:first-child").all_inner_texts()]
        assert len(seqs) > 1 and seqs == sorted(seqs, reverse=True), "newest first"
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
        await tab.page.get_by_label("From (UTC)").fill(tomorrow)
        await tab.page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_text(["No entries match."])
        await tab.page.get_by_label("From (UTC)").fill("")
        await tab.page.get_by_role("button", name="Filter").click()
        await expect(change).to_have_count(1)
        await tab.screenshot("admin-audit")


async def test_a_tenant_created_and_suspended_in_the_console_is_refused_by_the_api(
    running: Running, browser: Browser
) -> None:
    async with console_page(browser, running.url) as tab:
        await tab.sign_in(ADMIN_TOKEN, kind="admin")
        await tab.page.get_by_label("Name").fill("initech")
        await tab.page.get_by_label("Tier").select_option("free")
        await tab.page.get_by_label("Region").select_option("eu")
        await tab.page.get_by_role("button", name="Create tenant").click()
        await expect(tab.page.locator("#notice")).to_contain_text("Tenant initech created")
        row = tab.page.locator("#tenants tbody tr", has_text="initech")
        await expect(row).to_contain_text("free")
        await expect(row).to_contain_text("eu")
        await tab.screenshot("admin-tenants")
        await tab.page.set_viewport_size({"width": 800, "height": 900})
        width = await tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, f"the tenants page scrolls sideways at 800px ({width}px)"
        await tab.page.set_viewport_size({"width": 1366, "height": 820})

        await row.get_by_role("link", name="initech").click()
        await tab.page.wait_for_url("**/console/admin/tenants/*")
        await tab.ready()
        await tab.page.get_by_role("button", name="Create key").click()
        secret = tab.page.locator("#new-key-text")
        await expect(secret).to_have_text(re.compile(r"^ts-"))
        key = await secret.inner_text()
        await expect(tab.page.locator("#keys tbody tr")).to_have_count(1)
        async with running.http(key) as http:
            assert (await http.get("/v1/models")).status_code == 200

        tab.page.once("dialog", _accept)
        await tab.page.get_by_role("button", name="Suspend").click()
        await expect(tab.page.locator("#facts")).to_contain_text("suspended")
        await expect(tab.page.get_by_role("button", name="Resume")).to_be_visible()
        async with running.http(key) as http:
            r = await http.get("/v1/models")
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"]


async def test_the_pools_page_shows_the_engine_replica_and_its_hot_adapters(
    running: Running, browser: Browser, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter, _ = await running.ready_adapter("pools-bot", tiny_model_dir, tmp_path, seed=2)
    for model in (running.model, "pools-bot"):
        await running.sdk().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
    async with console_page(browser, running.url) as tab:
        await tab.sign_in(ADMIN_TOKEN, kind="admin")
        await tab.open("/admin/pools")
        await tab.page.get_by_label("Refresh every 5 s").uncheck()
        pool = tab.page.get_by_role("region", name=re.compile("^Pool "))
        await expect(pool).to_have_count(1)
        await expect(pool).to_contain_text(running.model)
        replica = pool.locator("tbody tr")
        await expect(replica).to_have_count(1)
        await expect(replica.locator(".badge")).to_have_text("up")
        await expect(replica.get_by_role("meter", name="KV cache usage")).to_be_visible()
        await expect(replica).to_contain_text("blocks")
        await expect(replica).to_contain_text("hot")
        hot = replica.get_by_role("list", name="Hot adapters")
        await expect(hot).to_contain_text(adapter["id"])
        await tab.page.get_by_role("button", name="Refresh").click()
        await expect(tab.page.locator("#updated")).to_contain_text("Updated")
        await tab.screenshot("admin-pools")


async def test_a_model_version_is_registered_and_deprecated(
    running: Running, browser: Browser, tiny_model_dir: Path
) -> None:
    async with console_page(browser, running.url) as tab:
        tab.allow("400")
        await tab.sign_in(ADMIN_TOKEN, kind="admin")
        await tab.open("/admin/models")
        await tab.page.get_by_label("Path on the server").fill(str(tiny_model_dir))
        await tab.page.get_by_label("Name", exact=True).fill("tiny")
        await tab.page.get_by_label("Version", exact=True).fill("1.0.0")
        await tab.page.get_by_role("button", name="Register").click()
        await expect(tab.page.locator("#notice")).to_contain_text("tiny@1.0.0 registered")
        row = tab.page.locator("#versions tbody tr", has_text="tiny@1.0.0")
        await expect(row).to_contain_text("active")
        await expect(row).to_contain_text("safetensors")

        # Archiving an active version is refused: the API's message in the alert box.
        tab.page.once("dialog", _accept)
        await row.get_by_role("button", name="Archive").click()
        await expect(tab.page.get_by_role("alert")).not_to_be_empty()

        await row.get_by_role("button", name="Deprecate…").click()
        await expect(tab.page.get_by_label("Version (name@version)")).to_have_value("tiny@1.0.0")
        await tab.page.get_by_label("End date").fill("2099-12-31")
        await tab.page.get_by_role("button", name="Deprecate", exact=True).click()
        await expect(tab.page.locator("#notice")).to_contain_text("deprecated until 2099-12-31")
        await expect(row).to_contain_text("deprecated")
        await tab.screenshot("admin-models")


async def test_the_rollouts_and_alerts_pages_render(running: Running, browser: Browser) -> None:
    async with console_page(browser, running.url) as tab:
        tab.allow("404")
        await tab.sign_in(ADMIN_TOKEN, kind="admin")
        await tab.open("/admin/rollouts")
        await expect(tab.page.locator("#rollouts")).to_contain_text("No rollout is running.")
        await tab.screenshot("admin-rollouts")
        await tab.page.get_by_label("Model", exact=True).first.fill("no-such-model")
        await tab.page.get_by_role("button", name="Show").click()
        await expect(tab.page.get_by_role("alert")).to_contain_text("has no rollout")
        await tab.open("/admin/alerts")
        await expect(tab.page.locator("#burning tbody")).to_contain_text("No error budget")
        await tab.screenshot("admin-alerts")
