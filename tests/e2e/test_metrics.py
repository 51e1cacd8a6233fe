"""`/metrics` on a real server: the admin token only; per-tenant counters and histograms
move with SDK traffic; the engine's gauges are there; no request id or prompt text."""

from __future__ import annotations

import asyncio
import re

import openai
import pytest

from tests.helpers.server import Running

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = "the metrics canary 91827 says hello"


def _samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def _value(samples: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    found = [v for k, v in samples.items() if k.split("{")[0] == name and all(w in k for w in want)]
    assert found, f"no {name} with {labels}"
    return sum(found)


async def _scrape(running: Running) -> str:
    async with running.admin() as admin:
        response = await admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_metrics_need_the_admin_token(running: Running) -> None:
    async with running.http("") as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    async with running.http() as tenant:  # a tenant's API key is no admin token
        assert (await tenant.get("/metrics")).status_code == 401
    async with running.admin("tsadm-wrong") as wrong:
        assert (await wrong.get("/metrics")).status_code == 401


async def test_tenant_traffic_moves_its_series_and_leaks_nothing(running: Running) -> None:
    acme = running.acme.id
    before = _samples(await _scrape(running))
    sdk = running.sdk()
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": PROMPT}
    ]
    raw = await sdk.chat.completions.with_raw_response.create(
        model=running.model, messages=messages, max_tokens=4
    )
    request_ids = [raw.headers["x-request-id"]]
    stream = await sdk.chat.completions.create(
        model=running.model, messages=messages, max_tokens=4, stream=True
    )
    async for _ in stream:
        pass
    with pytest.raises(openai.NotFoundError):
        await sdk.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=2)

    text = await _scrape(running)
    after = _samples(text)

    def moved(name: str, **labels: str) -> float:
        old = (
            _value(before, name, **labels)
            if any(k.split("{")[0] == name and f'tenant="{acme}"' in k for k in before)
            else 0.0
        )
        return _value(after, name, **labels) - old

    assert moved("tenantserve_requests_total", tenant=acme, status="completed") == 2
    assert moved("tenantserve_requests_total", tenant=acme, status="rejected") == 1
    assert _value(after, "tenantserve_rejections_total", tenant=acme, model="unknown") >= 1
    assert moved("tenantserve_input_tokens_total", tenant=acme) > 0
    assert moved("tenantserve_output_tokens_total", tenant=acme) > 0
    assert moved("tenantserve_time_to_first_token_seconds_count", tenant=acme) == 2
    assert moved("tenantserve_request_duration_seconds_count", tenant=acme) == 2
    assert moved("tenantserve_queue_wait_seconds_count", tenant=acme) == 2

    pool = {"pool": "shared"}
    assert _value(after, "tenantserve_engine_up", **pool) == 1
    assert _value(after, "tenantserve_engine_kv_blocks", state="free", **pool) > 0
    async with asyncio.timeout(5):  # engine stats are cached for a second
        while _value(after, "tenantserve_engine_steps_total", **pool) == 0:
            await asyncio.sleep(0.25)
            after = _samples(await _scrape(running))
    for name in (
        "tenantserve_engine_batch_size",
        "tenantserve_engine_preemptions_total",
        "tenantserve_engine_prefix_cache_hit_rate",
        "tenantserve_engine_adapters",
        "tenantserve_engine_adapter_load_seconds_count",
        "tenantserve_pool_in_flight",
        "tenantserve_pool_waiting",
    ):
        _value(after, name, **pool)

    assert PROMPT not in text and "91827" not in text
    assert not re.search(r"req_[0-9a-f]{8}", text)
    for rid in request_ids:
        assert rid not in text
