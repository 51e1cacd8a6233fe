"""The vLLM pool end to end, through the official SDK: a real vLLM server (CPU build)
behind tenantserve. A tenant's adapter is loaded into vLLM on first use and changes the
answer; tenants never share vLLM's prefix cache, whatever `cache_salt` a client sends;
the tier is sent as vLLM's priority; usage is vLLM's, counted once, streamed or not."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.vllm.conftest import CAPTURED_MODEL, VLLM_MODEL, VllmRunning
from tests.helpers.lora import write_random_adapter
from tests.helpers.server import add_tenant

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


async def _greedy(sdk: openai.AsyncOpenAI, model: str, **extra: Any) -> str:
    chat = await sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me about the sea."}],
        max_tokens=12,
        temperature=0,
        **extra,
    )
    return chat.choices[0].message.content or ""


async def _prefix_cache_hits(v: VllmRunning) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{v.vllm_root}/metrics")).text
    found = re.search(r"^vllm:prefix_cache_hits_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    assert found, "vLLM's /metrics has no prefix_cache_hits_total"
    return float(found.group(1))


async def test_a_tenants_adapter_is_loaded_into_vllm_on_first_use(
    vllm_running: VllmRunning, smollm2_dir: Path, tmp_path: Path
) -> None:
    running = vllm_running.running
    adapter = write_random_adapter(smollm2_dir, tmp_path / "a", 8, "all-linear", seed=3, b_std=1.0)
    files = {
        n: (n, (adapter / n).read_bytes())
        for n in ("adapter_config.json", "adapter_model.safetensors")
    }
    async with running.http() as http:
        up = await http.post(
            "/v1/adapters",
            data={"name": "sea-bot", "base_model": vllm_running.registry_ref},
            files=files,
            timeout=300,
        )
    assert up.status_code == 201 and up.json()["status"] == "ready", up.text
    adapters = next(p for p in running.service.pools if p.name == "vllm").adapters  # type: ignore[union-attr]
    assert adapters.loaded() == []
    sdk = running.sdk()
    tuned = await _greedy(sdk, "sea-bot")
    assert len(adapters.loaded()) == 1  # loaded on its first use, under its adapter id
    async with httpx.AsyncClient() as http:
        served = {
            m["id"] for m in (await http.get(f"{vllm_running.vllm.base_url}/models")).json()["data"]
        }
    assert set(adapters.loaded()) <= served
    assert tuned != await _greedy(sdk, VLLM_MODEL)
    assert tuned == await _greedy(sdk, "sea-bot")  # loaded once, deterministic
    assert adapters.num_loads == 1
    with pytest.raises(openai.NotFoundError):  # no other tenant's model
        await _greedy(running.sdk(running.globex.key), "sea-bot")


async def test_tenants_never_share_the_prefix_cache_whatever_salt_a_client_sends(
    vllm_running: VllmRunning,
) -> None:
    running = vllm_running.running
    prompt = "Here is a long shared preamble about ships and harbours. " * 60
    salt = {"cache_salt": "chosen-by-the-client"}

    async def ask(key: str) -> float:
        before = await _prefix_cache_hits(vllm_running)
        await running.sdk(key).completions.create(
            model=VLLM_MODEL, prompt=prompt, max_tokens=1, temperature=0, extra_body=salt
        )
        return await _prefix_cache_hits(vllm_running) - before

    assert await ask(running.acme.key) == 0  # a cold prompt
    assert await ask(running.acme.key) > 0  # the same tenant hits its own cache
    # The same prompt and the same client-sent salt: another tenant does not hit.
    assert await ask(running.globex.key) == 0
    assert await ask(running.globex.key) > 0


async def test_the_tier_is_sent_as_priority_and_the_salt_is_the_tenants(
    vllm_running: VllmRunning,
) -> None:
    running, captured = vllm_running.running, vllm_running.captured
    extra = {"priority": -10, "cache_salt": "guessed"}
    sent: dict[str, dict[str, Any]] = {}
    for name, key in (
        ("premium", vllm_running.premium.key),
        ("standard", running.acme.key),
        ("free", vllm_running.free.key),
    ):
        captured.requests.clear()
        await running.sdk(key).chat.completions.create(
            model=CAPTURED_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            extra_body=extra,
        )
        sent[name] = captured.requests[-1]
    assert [sent[t]["priority"] for t in ("premium", "standard", "free")] == [0, 1, 2]
    salts = {body["cache_salt"] for body in sent.values()}
    assert len(salts) == 3 and "guessed" not in salts


async def test_usage_is_vllms_and_counted_once_streamed_or_not(
    vllm_running: VllmRunning,
) -> None:
    running = vllm_running.running
    tenant = await add_tenant(running.tenancy, "vllm-usage")
    sdk = running.sdk(tenant.key)
    messages: Any = [{"role": "user", "content": "Count to five."}]
    whole = await sdk.chat.completions.create(
        model=VLLM_MODEL, messages=messages, max_tokens=8, temperature=0
    )
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    stream = await sdk.chat.completions.create(
        model=VLLM_MODEL,
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, stream_usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            stream_usage = chunk.usage
    assert text == whole.choices[0].message.content  # greedy: the same answer
    assert stream_usage is not None and stream_usage.total_tokens == whole.usage.total_tokens
    expected_output = whole.usage.completion_tokens + stream_usage.completion_tokens
    deadline = time.monotonic() + 10
    while True:
        async with running.http(key=tenant.key) as http:
            total = (await http.get("/v1/usage")).json()["total"]
        if total["requests"] >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert total["requests"] == 2
    assert total["output_tokens"] == expected_output
    assert total["input_tokens"] == whole.usage.prompt_tokens + stream_usage.prompt_tokens
