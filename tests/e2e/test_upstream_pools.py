"""External OpenAI-compatible pools behind the gateway: forwarding and rewriting, usage,
streams, premium reservations, residency, upstream failures, quotas, disconnects — with
the official SDK against a real server whose pools are scripted upstream servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy
from tenantserve.pool_config import PoolConfig
from tenantserve.tenancy.model import Region
from tests.helpers.server import ADMIN_TOKEN, TenantKey, add_tenant, serve, server_settings
from tests.helpers.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, FakeUpstream, running_upstream

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Pools:
    url: str
    shared: FakeUpstream
    reserved: FakeUpstream
    eu: FakeUpstream
    acme: TenantKey  # standard, us
    vip: TenantKey  # premium, us, with a reservation
    rich: TenantKey  # premium, us, no reservation
    euro: TenantKey  # standard, eu

    def sdk(self, who: TenantKey) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=who.key, max_retries=0)

    def http(self, who: TenantKey) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {who.key}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pools(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pools]:
    settings = server_settings(tmp_path_factory.mktemp("data"), tiny_model_dir)
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme")
        vip = await add_tenant(tenancy.service, "vip", tier="premium")
        rich = await add_tenant(tenancy.service, "rich", tier="premium")
        euro = await add_tenant(tenancy.service, "euro", region="eu")
    finally:
        await tenancy.db.dispose()
    async with (
        running_upstream("shared") as shared,
        running_upstream("reserved") as reserved,
        running_upstream("eu") as eu,
    ):
        settings = replace(
            settings,
            builtin_engine=False,
            pools=(
                PoolConfig("shared-us", shared.url, ("ext-model=upstream-llama",)),
                PoolConfig(
                    "vip-us",
                    reserved.url,
                    ("ext-model=upstream-llama", "vip-model"),
                    reserved_for=(vip.id,),
                ),
                PoolConfig("shared-eu", eu.url, ("eu-model",), region=Region.EU),
            ),
        )
        async with serve(settings) as (url, _):
            yield Pools(url, shared, reserved, eu, acme, vip, rich, euro)


async def test_chat_is_forwarded_and_rewritten(pools: Pools) -> None:
    raw = await pools.sdk(pools.acme).chat.completions.with_raw_response.create(
        model="ext-model", messages=[{"role": "user", "content": "hi"}], max_tokens=7, user="u1"
    )
    chat = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert chat.id == f"chatcmpl-{request_id}"
    assert chat.model == "ext-model"
    assert chat.choices[0].message.content == "Hello from the upstream."
    assert chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    sent = pools.shared.requests[-1]
    assert (sent["model"], sent["max_tokens"], sent["user"]) == ("upstream-llama", 7, "u1")
    assert pools.shared.headers[-1]["x-request-id"] == request_id
    timing = raw.headers["server-timing"]
    assert timing.startswith("admission;dur=") and ", upstream;dur=" in timing


async def test_a_clients_priority_and_cache_salt_never_reach_the_upstream(pools: Pools) -> None:
    await pools.sdk(pools.acme).chat.completions.create(
        model="ext-model",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"priority": -100, "cache_salt": "someone-elses", "top_k": 3},
    )
    sent = pools.shared.requests[-1]
    assert "priority" not in sent and "cache_salt" not in sent
    assert sent["top_k"] == 3  # other fields pass through


async def test_max_completion_tokens_is_kept_and_a_missing_max_tokens_is_the_tier_cap(
    pools: Pools,
) -> None:
    sdk = pools.sdk(pools.acme)
    await sdk.chat.completions.create(
        model="ext-model", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=9
    )
    assert pools.shared.requests[-1]["max_completion_tokens"] == 9
    assert "max_tokens" not in pools.shared.requests[-1]
    await sdk.chat.completions.create(
        model="ext-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert pools.shared.requests[-1]["max_tokens"] == 4096  # the standard tier's cap


async def test_text_completion_stream_with_usage(pools: Pools) -> None:
    stream = await pools.sdk(pools.acme).completions.create(
        model="ext-model",
        prompt="Say hi",
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the upstream."
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("cmpl-")
    assert {c.model for c in chunks} == {"ext-model"}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 16


async def test_a_stream_without_include_usage_gets_no_usage_chunk(pools: Pools) -> None:
    stream = await pools.sdk(pools.acme).chat.completions.create(
        model="ext-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello from the upstream."
    # The gateway asked the upstream for usage anyway, to account the request.
    assert pools.shared.requests[-1]["stream_options"] == {"include_usage": True}


async def test_a_premium_reservation_routes_to_the_reserved_pool_only_for_its_tenant(
    pools: Pools,
) -> None:
    body = {"model": "ext-model", "messages": [{"role": "user", "content": "hi"}]}
    before = (len(pools.shared.requests), len(pools.reserved.requests))
    for who in (pools.vip, pools.rich, pools.acme):
        async with pools.http(who) as http:
            assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
    assert len(pools.reserved.requests) - before[1] == 1  # vip
    assert len(pools.shared.requests) - before[0] == 2  # rich (premium, no reservation), acme


async def test_a_model_only_in_another_tenants_reserved_pool_does_not_exist(pools: Pools) -> None:
    body = {"model": "vip-model", "messages": [{"role": "user", "content": "hi"}]}
    async with pools.http(pools.acme) as http:
        response = await http.post("/v1/chat/completions", json=body)
        listed = {m["id"] for m in (await http.get("/v1/models")).json()["data"]}
        card = await http.get("/v1/models/vip-model")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert card.status_code == 404
    assert listed == {"ext-model"}
    async with pools.http(pools.vip) as http:
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        listed = {m["id"] for m in (await http.get("/v1/models")).json()["data"]}
    assert listed == {"ext-model", "vip-model"}


async def test_residency_a_model_of_another_region_is_refused(pools: Pools) -> None:
    async with pools.http(pools.acme) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "eu-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "region_mismatch"
    sent_to_eu = len(pools.eu.requests)
    async with pools.http(pools.euro) as http:
        assert {m["id"] for m in (await http.get("/v1/models")).json()["data"]} == {"eu-model"}
        eu_ok = await http.post(
            "/v1/chat/completions",
            json={"model": "eu-model", "messages": [{"role": "user", "content": "hi"}]},
        )
        us_only = await http.post(
            "/v1/chat/completions",
            json={"model": "ext-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert eu_ok.status_code == 200 and len(pools.eu.requests) == sent_to_eu + 1
    assert us_only.status_code == 403


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (
            400,
            {"error": {"message": "bad prompt", "type": "invalid_request_error", "code": "x"}},
            400,
        ),
        (500, {"detail": "boom"}, 502),
        (401, {"error": {"message": "bad upstream key", "type": "auth"}}, 502),
    ],
)
async def test_upstream_errors(pools: Pools, status: int, error: dict, expected: int) -> None:
    pools.shared.fail_with = (status, error)
    try:
        async with pools.http(pools.acme) as http:
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "ext-model", "messages": [{"role": "user", "content": "hi"}]},
            )
    finally:
        pools.shared.fail_with = None
    assert response.status_code == expected
    body = response.json()["error"]
    assert set(body) == {"message", "type", "code", "param"}
    if expected == 400:
        assert (body["message"], body["code"]) == ("bad prompt", "x")
    else:
        assert body["code"] == "upstream_error"


async def test_hard_and_soft_quotas(pools: Pools) -> None:
    async with pools.admin() as admin:
        response = await admin.patch(
            f"/admin/tenants/{pools.rich.id}",
            json={
                "quotas": [
                    {"metric": "requests", "period": "day", "limit": 3, "enforcement": "hard"},
                    {"metric": "tokens", "period": "month", "limit": 40, "enforcement": "soft"},
                ]
            },
        )
        assert response.status_code == 200, response.text
    # The reservation covers the tier default (16384 output tokens), so 40 tokens a month
    # is crossed at once: the output is clamped to the soft floor and operators see it.
    body = {"model": "ext-model", "messages": [{"role": "user", "content": "hi"}]}
    async with pools.http(pools.rich) as http:
        statuses = []
        for _ in range(4):
            response = await http.post("/v1/chat/completions", json=body)
            statuses.append(response.status_code)
        # Requests before this test count too: "rich" made one in the reservation test.
        assert statuses == [200, 200, 429, 429]
        assert response.json()["error"]["code"] == "quota_exceeded"
        assert int(response.headers["retry-after"]) >= 1
    assert pools.shared.requests[-1]["max_tokens"] == 16
    async with pools.admin() as admin:
        events = (await admin.get("/admin/events")).json()["data"]
    [alert] = [e for e in events if e["kind"] == "soft_quota_exceeded"]
    assert alert["tenant_id"] == pools.rich.id
    assert alert["details"]["metric"] == "tokens"


async def test_a_client_leaving_a_stream_closes_the_upstream_request(pools: Pools) -> None:
    pools.shared.delay_s = 0.3
    try:
        async with pools.http(pools.acme) as http:
            body = {
                "model": "ext-model",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break  # the first event; then hang up
        async with asyncio.timeout(5):
            while pools.shared.disconnects == 0:
                await asyncio.sleep(0.05)
    finally:
        pools.shared.delay_s = 0.0


async def test_a_client_leaving_a_whole_completion_closes_the_upstream_request(
    pools: Pools,
) -> None:
    pools.shared.delay_s = 2.0
    before = pools.shared.disconnects
    try:
        async with pools.http(pools.acme) as http:
            body = {"model": "ext-model", "messages": [{"role": "user", "content": "hi"}]}
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/v1/chat/completions", json=body, timeout=0.3)
        # The gateway saw the client go and closed its upstream connection: the upstream
        # sees the disconnect long before its 2 s delay ends.
        async with asyncio.timeout(1.5):
            while pools.shared.disconnects == before:
                await asyncio.sleep(0.02)
    finally:
        pools.shared.delay_s = 0.0


async def test_upstream_requests_are_metered_with_the_upstreams_usage(pools: Pools) -> None:
    tenant_id, key = await _admin_tenant(pools, "metered-upstream")
    client = openai.AsyncOpenAI(base_url=f"{pools.url}/v1", api_key=key, max_retries=0)
    hello: Any = [{"role": "user", "content": "hi"}]
    await client.chat.completions.create(model="ext-model", messages=hello)
    stream = await client.chat.completions.create(model="ext-model", messages=hello, stream=True)
    async for _ in stream:
        pass
    # A stream the client leaves after the first event: billed for the chunks it was sent.
    pools.shared.delay_s = 0.3
    try:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=pools.url, headers=headers, timeout=30) as http:
            body = {"model": "ext-model", "messages": hello, "stream": True, "max_tokens": 50}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break
    finally:
        pools.shared.delay_s = 0.0
    async with httpx.AsyncClient(base_url=pools.url, timeout=30) as http:
        for _ in range(100):
            r = await http.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
            total = r.json()["total"]
            if total["requests"] == 3:
                break
            await asyncio.sleep(0.05)
    assert total["requests"] == 3 and total["cancelled"] == 1 and total["errors"] == 0
    # Two whole answers with the upstream's usage; the cut stream: 1 to 2 chunks sent.
    assert 2 * COMPLETION_TOKENS + 1 <= total["output_tokens"] <= 2 * COMPLETION_TOKENS + 2
    assert total["input_tokens"] >= 2 * PROMPT_TOKENS
    assert r.json()["tenant_id"] == tenant_id
    assert {b["model"] for b in r.json()["data"]} == {"ext-model"}


async def _admin_tenant(pools: Pools, name: str) -> tuple[str, str]:
    """(tenant id, API key) of a new standard-tier tenant, made through the admin API."""
    async with pools.admin() as admin:
        r = await admin.post(
            "/admin/tenants", json={"name": name, "tier": "standard", "region": "us"}
        )
        assert r.status_code == 201, r.text
        tenant_id = r.json()["id"]
        r = await admin.post(f"/admin/tenants/{tenant_id}/keys", json={})
        assert r.status_code == 201, r.text
        return tenant_id, r.json()["key"]
