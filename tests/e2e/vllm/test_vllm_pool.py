"""What is vLLM's own in a vLLM pool, end to end through the official SDK with a real
vLLM server (CPU build) behind tenantserve: a tenant's adapter is loaded into vLLM on
first use, once; the tier is sent as vLLM's priority and the cache salt is the tenant's,
whatever the client sends. Answers, usage, adapters per request, the per-tenant prefix
cache and premium scheduling are the backend suite's (tests/e2e/backends[vllm])."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.vllm.conftest import CAPTURED_MODEL, VLLM_MODEL, VllmRunning
from tests.helpers.lora import write_random_adapter

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


async def test_a_tenants_adapter_is_loaded_into_vllm_on_first_use(
    vllm_running: VllmRunning, smollm2_dir: Path, tmp_path: Path
) -> None:
    running = vllm_running.running
    adapter = write_random_adapter(smollm2_dir, tmp_path / "a", 8, "all-linear", seed=3, b_std=1.0)
    up = await running.upload_adapter("sea-bot", adapter, base_model=vllm_running.registry_ref)
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
