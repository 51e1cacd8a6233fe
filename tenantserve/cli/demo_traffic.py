"""What `tenantserve up --demo` shows once the server is up: a few requests per demo
tenant through the real API, then each tenant's metered usage (`GET /v1/usage`, as the
tenant) and its draft invoice for the current month (generated and read through the
admin API) — the whole path from request to bill, on a fresh machine.

Runs on a thread of its own against the server's own URL; any failure is one line on
stderr and never stops the server.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from tenantserve.cli.demo import DemoTenant

PROMPTS = ("Say hello in French.", "Name a colour of the sky.")


def run_demo_traffic(
    base_url: str, model: str, demos: Sequence[DemoTenant], admin_token: str
) -> None:
    try:
        with httpx.Client(base_url=base_url, timeout=120) as http:
            _wait_healthy(http)
            counts = {d.name: _traffic(http, model, d) for d in demos}
            usage = {d.name: _usage_once_counted(http, d, counts[d.name]) for d in demos}
            lines = ["", "demo usage this month (GET /v1/usage as each tenant):"]
            lines += _usage_table(demos, usage)
            lines += _invoices(http, demos, admin_token)
        print("\n".join(lines), flush=True)
    except Exception as e:  # the demo is a courtesy; the server keeps serving
        print(f"[tenantserve] demo traffic failed: {e}", file=sys.stderr, flush=True)


def _wait_healthy(http: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not become healthy in 60 s")
        time.sleep(0.2)


def _traffic(http: httpx.Client, model: str, demo: DemoTenant) -> int:
    """A couple of chat completions as `demo`; how many succeeded."""
    done = 0
    for prompt in PROMPTS:
        r = http.post(
            "/v1/chat/completions",
            headers=_auth(demo.api_key),
            json={
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 16,
            },
        )
        done += r.status_code == 200
    return done


def _usage_once_counted(http: httpx.Client, demo: DemoTenant, sent: int) -> dict[str, Any]:
    """The tenant's usage once its `sent` requests are counted (or after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        r = http.get("/v1/usage", headers=_auth(demo.api_key), params={"granularity": "day"})
        r.raise_for_status()
        usage: dict[str, Any] = r.json()
        if usage["total"]["requests"] >= sent or time.monotonic() > deadline:
            return usage
        time.sleep(0.1)


def _usage_table(demos: Sequence[DemoTenant], usage: dict[str, dict[str, Any]]) -> list[str]:
    rows = [("tenant", "requests", "input", "cached", "output")]
    for d in demos:
        t = usage[d.name]["total"]
        rows.append(
            (
                d.name,
                str(t["requests"]),
                str(t["input_tokens"]),
                str(t["cached_input_tokens"]),
                str(t["output_tokens"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def _invoices(http: httpx.Client, demos: Sequence[DemoTenant], admin_token: str) -> list[str]:
    """Each demo tenant's draft invoice for this month, generated through the admin API."""
    period = datetime.now(UTC).strftime("%Y-%m")
    lines = ["", f"draft invoices for {period} (POST /admin/invoices/generate):"]
    for d in demos:
        r = http.post(
            "/admin/invoices/generate",
            headers=_auth(admin_token),
            json={"period": period, "tenant_id": d.tenant_id},
        )
        if r.status_code >= 400:
            lines.append(f"  {d.name}: {r.status_code} {r.text}")
            continue
        body = r.json()
        invoice = body["data"][0] if "data" in body else body
        lines.append(
            f"  {d.name}: {invoice.get('id')} {invoice.get('status')} "
            f"total {invoice.get('total_usd')} {invoice.get('currency', 'usd').upper()} "
            f"({len(invoice.get('lines', []))} lines)"
        )
    return lines


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
