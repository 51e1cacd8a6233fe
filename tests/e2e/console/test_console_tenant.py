"""The tenant console in a real browser against a real server: usage the SDK made shown
in the overview's chart (its numbers are `/v1/usage`'s), a key created (its plaintext
shown once), used and revoked, an adapter uploaded with its report, requests listed and
opened, invoices downloaded; and another tenant seeing none of it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam
from playwright.async_api import Browser, Dialog, expect

from tests.helpers.browser import ConsolePage, console_page
from tests.helpers.lora import write_random_adapter
from tests.helpers.server import Running

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Write a haiku."}]
ADAPTER = "support-bot"
QUOTAS = [
    {"metric": "requests", "period": "month", "limit": 5, "enforcement": "soft"},
    {"metric": "tokens", "period": "month", "limit": 1_000_000, "enforcement": "hard"},
]


async def _traffic(running: Running, n: int) -> list[str]:
    """`n` SDK requests as acme; their request ids once `/v1/usage` counts them."""
    sdk = running.sdk()
    async with running.http() as http:
        before = (await http.get("/v1/usage", params={"granularity": "day"})).json()
        ids = []
        for _ in range(n):
            raw = await sdk.chat.completions.with_raw_response.create(
                model=running.model, messages=HELLO, max_tokens=6
            )
            ids.append(raw.headers["x-request-id"])
        deadline = time.monotonic() + 5
        while True:
            usage = (await http.get("/v1/usage", params={"granularity": "day"})).json()
            if usage["total"]["requests"] >= before["total"]["requests"] + n:
                return ids
            assert time.monotonic() < deadline, "usage never counted the requests"
            await asyncio.sleep(0.1)


def _accept_dialogs(tab: ConsolePage) -> None:
    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    tab.page.on("dialog", lambda d: asyncio.ensure_future(accept(d)))


async def test_the_overview_charts_the_usage_the_sdk_made(
    running: Running, browser: Browser
) -> None:
    async with running.admin() as admin:
        r = await admin.patch(f"/admin/tenants/{running.acme.id}", json={"quotas": QUOTAS})
        assert r.status_code == 200, r.text
    await _traffic(running, 6)
    async with running.http() as http:
        usage = (await http.get("/v1/usage", params={"granularity": "day"})).json()
    total = usage["total"]
    async with console_page(browser, running.url) as tab:
        await tab.sign_in(running.acme.key)
        page = tab.page
        data: dict[str, Any] = await page.evaluate(
            """() => {
              const c = Chart.getChart(document.querySelector('#usage-chart')).data;
              const sets = c.datasets.map(d => ({label: d.label, data: d.data}));
              return {labels: c.labels, sets};
            }"""
        )
        sums = {s["label"]: sum(s["data"]) for s in data["sets"]}
        assert sums["Cached input tokens"] == total["cached_input_tokens"]
        assert sums["Output tokens"] == total["output_tokens"]
        uncached = total["input_tokens"] - total["cached_input_tokens"]
        assert sums["Input tokens (not cached)"] == uncached
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        day = data["labels"].index(today)
        buckets = [b for b in usage["data"] if b["start"].startswith(today)]
        assert data["sets"][2]["data"][day] == sum(b["output_tokens"] for b in buckets)
        label = await page.locator("#usage-chart").get_attribute("aria-label")
        assert label is not None and f"{total['output_tokens']:,} output tokens" in label
        # The accessible table says the same.
        await page.get_by_text("Show the numbers as a table").click()
        foot = page.locator("#usage-table tfoot")
        await expect(foot.locator("[data-total=input]")).to_have_text(f"{total['input_tokens']:,}")
        await expect(foot.locator("[data-total=requests]")).to_have_text(f"{total['requests']:,}")
        row = page.locator("#breakdown-table tbody tr").first
        await expect(row).to_contain_text(running.model)
        # Quotas: 6+ of 5 requests (soft, red), the hard token quota barely used (green).
        requests_quota = page.locator(".quota[data-metric=requests]")
        await expect(requests_quota).to_have_attribute("data-level", "bad")
        await expect(requests_quota).to_contain_text("soft")
        await expect(page.locator(".quota[data-metric=tokens]")).to_have_attribute(
            "data-level", "ok"
        )
        async with running.http() as http:
            spend = (await http.get("/v1/spend")).json()
        assert float(spend["total_usd"]) > 0
        await expect(page.locator("#spend-total")).to_have_text(
            f"${float(spend['total_usd']):,.2f}"
        )
        # TTFT percentiles computed by the server over the day's requests (`/v1/slo`).
        await expect(page.locator("#latency dd").first).to_have_text(re.compile(r"^\d+ ms$"))
        await expect(page.locator("#latency")).to_contain_text("2000 ms")  # standard SLO
        await expect(page.locator("#latency-help")).to_have_text(
            re.compile(r"^Time to first token of [1-9][\d,]* requests in the last 24 h\.$")
        )
        await tab.screenshot("tenant-overview")
        # ~800 px wide: nothing overflows the viewport.
        await page.set_viewport_size({"width": 800, "height": 900})
        await page.wait_for_timeout(300)  # Chart.js resizes on the next frames
        wide = await page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                 .filter(e => e.getBoundingClientRect().right > 801)
                 .map(e => e.tagName + '#' + e.id + '.' + e.className)"""
        )
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, wide


async def test_a_key_is_shown_once_works_and_is_revoked(running: Running, browser: Browser) -> None:
    async with console_page(browser, running.url) as tab:
        await tab.sign_in(running.acme.key)
        await tab.open("/keys")
        page = tab.page
        await page.get_by_label("Expires after (days)").fill("30")
        await page.get_by_role("button", name="Create key").click()
        secret = page.locator(".secret")
        await expect(secret).to_have_text(re.compile(r"^ts-"))
        plaintext = (await secret.text_content()) or ""
        await expect(page.get_by_text("only time it is shown")).to_be_visible()
        async with running.http(key=plaintext) as http:
            assert (await http.get("/v1/models")).status_code == 200
            new_id = (await http.get("/v1/me")).json()["credential"]["key_id"]
        row = page.locator(f"tr[data-key-id={new_id}]")
        await expect(row).to_contain_text("active")
        await tab.screenshot("tenant-keys")
        await page.reload()
        await tab.ready()
        await expect(page.locator("#new-key")).to_be_hidden()
        assert plaintext not in await page.content()
        _accept_dialogs(tab)
        await row.get_by_role("button", name="Revoke").click()
        await expect(row).to_contain_text("revoked")
        async with running.http(key=plaintext) as http:
            assert (await http.get("/v1/models")).status_code == 401


async def test_an_uploaded_adapter_shows_its_report_and_is_ready(
    running: Running, browser: Browser, tmp_path: Path
) -> None:
    model_dir = running.service.settings.model_dir
    assert model_dir is not None
    adapter = write_random_adapter(model_dir, tmp_path / "a", 4, ["q_proj", "v_proj"], 3, b_std=1.0)
    files = [str(adapter / n) for n in ("adapter_config.json", "adapter_model.safetensors")]
    async with console_page(browser, running.url) as tab:
        await tab.sign_in(running.acme.key)
        await tab.open("/adapters")
        page = tab.page
        await page.get_by_label("Name").fill(ADAPTER)
        await page.get_by_label("Base model").select_option(running.model)
        await page.get_by_label("Files").set_input_files(files)
        await page.get_by_role("button", name="Upload and validate").click()
        report = page.locator("#report-card")
        await expect(report).to_be_visible(timeout=60_000)
        await expect(report).to_contain_text("ready")
        rows = report.locator("tbody tr")
        assert await rows.count() == 5
        assert await report.locator(".badge.ok", has_text="pass").count() == 5
        assert await page.locator("progress").get_attribute("value") == "1"
        listed = page.locator("#adapters-table tbody tr", has_text=ADAPTER)
        await expect(listed).to_contain_text("ready")
        await tab.screenshot("tenant-adapters")
    async with running.http() as http:
        (adapter_json,) = (await http.get("/v1/adapters")).json()["data"]
    assert (adapter_json["name"], adapter_json["status"]) == (ADAPTER, "ready")


async def test_requests_are_listed_and_open_to_their_record(
    running: Running, browser: Browser
) -> None:
    (request_id,) = await _traffic(running, 1)
    async with console_page(browser, running.url) as tab:
        await tab.sign_in(running.acme.key)
        await tab.open("/requests")
        page = tab.page
        link = page.get_by_role("link", name=request_id)
        await expect(link).to_be_visible()
        await page.get_by_label("Status").select_option("rejected")
        await page.get_by_role("button", name="Apply").click()
        await expect(page.locator("#requests-table")).to_contain_text("No requests")
        await page.get_by_label("Status").select_option("completed")
        await page.get_by_role("button", name="Apply").click()
        await expect(link).to_be_visible()
        await tab.screenshot("tenant-requests")
        await link.click()
        await page.wait_for_url(f"**/console/requests/{request_id}")
        await tab.ready()
        await expect(page.locator("h1")).to_contain_text(request_id)
        await expect(page.locator("#summary")).to_contain_text("completed")
        await expect(page.locator("#summary")).to_contain_text(running.model)
        await expect(page.locator("#timings")).to_contain_text("Time to first token")
        await tab.screenshot("tenant-request-detail")


async def test_invoices_are_listed_and_downloaded(running: Running, browser: Browser) -> None:
    period = datetime.now(UTC).strftime("%Y-%m")
    async with running.admin() as admin:
        r = await admin.post(
            "/admin/invoices/generate", json={"period": period, "tenant_id": running.acme.id}
        )
    invoice = r.json()["data"][0]
    async with console_page(browser, running.url) as tab:
        await tab.sign_in(running.acme.key)
        await tab.open("/invoices")
        page = tab.page
        row = page.locator("#invoices-table tbody tr", has_text=invoice["id"])
        await expect(row).to_contain_text("draft")
        await expect(row).to_contain_text(f"${float(invoice['total_usd']):,.2f}")
        await tab.screenshot("tenant-invoices")
        async with page.expect_download() as json_download:
            await row.get_by_role("button", name=f"Download {period} as JSON").click()
        downloaded = json.loads(Path(await (await json_download.value).path()).read_text())
        assert downloaded["id"] == invoice["id"] and downloaded["total_usd"] == invoice["total_usd"]
        async with page.expect_download() as csv_download:
            await row.get_by_role("button", name=f"Download {period} as CSV").click()
        csv_file = await csv_download.value
        assert csv_file.suggested_filename.endswith(".csv")
        text = Path(await csv_file.path()).read_text()
        assert text.splitlines()[-1].endswith(invoice["total_usd"])


async def test_another_tenant_sees_none_of_acmes_data(running: Running, browser: Browser) -> None:
    (request_id,) = await _traffic(running, 1)
    async with running.http() as http:
        acme_keys = [k["prefix"] for k in (await http.get("/v1/keys")).json()["data"]]
        acme_invoices = [i["id"] for i in (await http.get("/v1/invoices")).json()["data"]]
    async with console_page(browser, running.url) as tab:
        tab.allow("404")
        await tab.sign_in(running.globex.key)
        page = tab.page
        await tab.open("/keys")
        keys_text = await page.locator("#keys-table").inner_text()
        assert all(prefix not in keys_text for prefix in acme_keys)
        await tab.open("/adapters")
        await expect(page.locator("#adapters-table")).to_contain_text("No adapters yet")
        await tab.open("/requests")
        assert request_id not in await page.locator("#requests-table").inner_text()
        await tab.open("/invoices")
        invoices_text = await page.locator("#invoices-table").inner_text()
        assert all(i not in invoices_text for i in acme_invoices)
        await tab.open(f"/requests/{request_id}")
        await expect(page.locator("h1")).to_have_text("Request not found")
        await expect(page.get_by_test_id("not-found")).to_contain_text(request_id)
