"""Metered usage over real HTTP: every request the SDK makes shows up exactly once in the
caller's `/v1/usage` (within a second, embedded pipeline), a stream the client leaves is
billed for what it was sent, quotas read the metered usage, and no tenant reads another's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.helpers.server import Running, add_tenant

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count to ten, please."}]


async def _usage(running: Running, key: str, **params: str) -> dict[str, Any]:
    async with running.http(key=key) as http:
        r = await http.get("/v1/usage", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _wait_for_requests(running: Running, key: str, n: int) -> dict[str, Any]:
    """The caller's usage once it counts `n` requests (fails after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        usage = await _usage(running, key)
        if usage["total"]["requests"] >= n or time.monotonic() > deadline:
            return usage
        await asyncio.sleep(0.05)


async def test_usage_counts_every_sdk_request_once_with_its_reported_tokens(
    running: Running,
) -> None:
    tenant = await add_tenant(running.tenancy, "usage-counted")
    client = running.sdk(tenant.key)
    prompt = completion = cached = 0
    for _ in range(3):
        reply = await client.chat.completions.create(
            model=running.model, messages=HELLO, max_tokens=5
        )
        assert reply.usage is not None
        prompt += reply.usage.prompt_tokens
        completion += reply.usage.completion_tokens
        details = reply.usage.prompt_tokens_details
        cached += details.cached_tokens or 0 if details else 0
    stream = await client.chat.completions.create(
        model=running.model,
        messages=HELLO,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.usage is not None:
            prompt += chunk.usage.prompt_tokens
            completion += chunk.usage.completion_tokens
            details = chunk.usage.prompt_tokens_details
            cached += details.cached_tokens or 0 if details else 0

    usage = await _wait_for_requests(running, tenant.key, 4)
    total = usage["total"]
    assert total["requests"] == 4
    assert total["input_tokens"] == prompt
    assert total["output_tokens"] == completion
    assert total["cached_input_tokens"] == cached > 0  # the repeated prompt hit the cache
    assert total["errors"] == total["cancelled"] == 0
    assert usage["object"] == "usage" and usage["tenant_id"] == tenant.id
    # One model, no adapter (in one hour bucket, or two across an hour boundary).
    assert {(b["model"].partition("@")[0], b["adapter"]) for b in usage["data"]} == {
        (running.model, None)
    }
    assert sum(b["requests"] for b in usage["data"]) == 4

    # Minute buckets hold the same requests; a day holds them too.
    minutes = await _usage(running, tenant.key, granularity="minute")
    assert sum(b["requests"] for b in minutes["data"]) == 4
    days = await _usage(running, tenant.key, granularity="day")
    assert days["total"] == total


async def test_a_stream_the_client_leaves_is_billed_as_cancelled_for_what_was_sent(
    running: Running,
) -> None:
    tenant = await add_tenant(running.tenancy, "usage-cancelled")
    received = 0
    async with running.http(key=tenant.key) as http:
        body = {
            "model": running.model,
            "messages": HELLO,
            "max_tokens": 200,
            "stream": True,
            "temperature": 1.0,
            "seed": 3,
            "stop": [],
        }
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                # A token chunk (the first, role-only chunk has empty content).
                if (
                    line.startswith("data: {")
                    and '"content":"' in line
                    and ('"content":""' not in line)
                ):
                    received += 1
                    if received == 3:
                        break  # hang up mid-stream
    usage = await _wait_for_requests(running, tenant.key, 1)
    total = usage["total"]
    assert total["requests"] == 1 and total["cancelled"] == 1 and total["errors"] == 0
    # Billed for the tokens generated up to the hang-up: at least what the client got.
    assert received <= total["output_tokens"] < 200
    assert total["input_tokens"] > 0


async def test_no_tenant_reads_another_tenants_usage(running: Running) -> None:
    a = await add_tenant(running.tenancy, "usage-a")
    b = await add_tenant(running.tenancy, "usage-b")
    await running.sdk(a.key).completions.create(model=running.model, prompt="Hi", max_tokens=2)
    usage_a = await _wait_for_requests(running, a.key, 1)
    assert usage_a["total"]["requests"] == 1
    usage_b = await _usage(running, b.key)
    assert usage_b["tenant_id"] == b.id and usage_b["total"]["requests"] == 0
    assert usage_b["data"] == []
    # The tenant id is never taken from the query: B asking for A's gets its own.
    usage_b = await _usage(running, b.key, tenant=a.id, tenant_id=a.id)
    assert usage_b["tenant_id"] == b.id and usage_b["total"]["requests"] == 0
    # Tenant keys do not open the operator view; the admin token does.
    async with running.http(key=a.key) as http:
        r = await http.get("/admin/usage", params={"tenant": a.id})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    async with running.admin() as admin:
        r = await admin.get("/admin/usage", params={"tenant": a.id})
    assert r.status_code == 200 and r.json()["total"] == usage_a["total"]
    async with running.http(key="") as http:
        assert (await http.get("/v1/usage")).status_code == 401


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"granularity": "week"}, "granularity"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-11-02", "end": "2026-11-01"}, "end"),
        ({"start": "2026-01-01", "granularity": "minute"}, "start"),
        ({"end": "9" * 40}, "end"),
    ],
)
async def test_bad_usage_queries_are_400s_in_openai_shape(
    running: Running, params: dict[str, str], param: str
) -> None:
    async with running.http() as http:
        r = await http.get("/v1/usage", params=params)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


async def test_a_hard_quota_is_enforced_from_metered_usage(running: Running) -> None:
    tenant = await add_tenant(running.tenancy, "usage-quota")
    quota = {"metric": "requests", "period": "day", "limit": 2, "enforcement": "hard"}
    async with running.admin() as admin:
        r = await admin.patch(f"/admin/tenants/{tenant.id}", json={"quotas": [quota]})
        assert r.status_code == 200, r.text
    client = running.sdk(tenant.key)
    for _ in range(2):
        await client.completions.create(model=running.model, prompt="Hi", max_tokens=1)
    await _wait_for_requests(running, tenant.key, 2)
    await asyncio.sleep(1.1)  # the ledger's snapshot of the tenant's usage expires
    async with running.http(key=tenant.key) as http:
        r = await http.post(
            "/v1/completions", json={"model": running.model, "prompt": "Hi", "max_tokens": 1}
        )
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    usage = await _usage(running, tenant.key)
    assert usage["total"]["requests"] == 2  # the refused request was never metered
    # Operators were told once the quota was used up (the default alert shares).
    async with running.admin() as admin:
        events = (await admin.get("/admin/events")).json()["data"]
    reached = [
        e for e in events if e["kind"] == "quota_threshold_reached" and e["tenant_id"] == tenant.id
    ]
    assert [(e["details"]["share"], e["details"]["used"]) for e in reached] == [(1.0, 2)]
