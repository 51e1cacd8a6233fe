"""One end-to-end suite, every engine backend (`backend`: built-in, Ray Serve, vLLM),
through the official SDK: the same answer streamed or not with usage counted once, a
tenant's adapter chosen per request and invisible to other tenants, a prefix cache never
shared between tenants whatever `cache_salt` a client sends, and a premium request served
past standard ones queued for the same pool."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.backends.conftest import Backend
from tests.helpers.lora import write_random_adapter
from tests.helpers.server import add_tenant

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SEA: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about the sea."}]


async def _greedy(sdk: openai.AsyncOpenAI, model: str, max_tokens: int = 12) -> str:
    chat = await sdk.chat.completions.create(
        model=model, messages=SEA, max_tokens=max_tokens, temperature=0
    )
    return chat.choices[0].message.content or ""


async def test_streamed_or_not_the_answer_is_the_same_and_usage_is_counted_once(
    backend: Backend,
) -> None:
    tenant = await add_tenant(backend.running.tenancy, "usage-once")
    sdk = backend.running.sdk(tenant.key)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count to five."}]
    whole = await sdk.chat.completions.create(
        model=backend.model, messages=messages, max_tokens=8, temperature=0
    )
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    stream = await sdk.chat.completions.create(
        model=backend.model,
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, streamed = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        streamed = chunk.usage or streamed
    assert text == whole.choices[0].message.content  # greedy: the same answer
    assert streamed is not None and streamed.total_tokens == whole.usage.total_tokens

    total = await backend.running.usage_total(tenant.key, 2)
    assert total["requests"] == 2 and total["errors"] == 0
    assert total["input_tokens"] == 2 * whole.usage.prompt_tokens
    assert total["output_tokens"] == whole.usage.completion_tokens + streamed.completion_tokens


async def test_a_tenants_adapter_is_chosen_per_request_and_invisible_to_others(
    backend: Backend, tmp_path: Path
) -> None:
    running = backend.running
    adapter = write_random_adapter(
        backend.model_dir, tmp_path / "a", 8, "all-linear", seed=3, b_std=1.0
    )
    up = await running.upload_adapter("sea-bot", adapter, base_model=backend.base_ref)
    assert up.status_code == 201 and up.json()["status"] == "ready", up.text

    sdk = running.sdk()
    tuned, base = await _greedy(sdk, "sea-bot"), await _greedy(sdk, backend.model)
    assert tuned != base
    # Adapter and base model requests interleaved: each gets its own answer.
    mixed = await asyncio.gather(*(_greedy(sdk, m) for m in ["sea-bot", backend.model] * 2))
    assert mixed == [tuned, base] * 2

    other = running.sdk(running.globex.key)
    with pytest.raises(openai.NotFoundError):
        await _greedy(other, "sea-bot")
    assert "sea-bot" not in {m.id async for m in other.models.list()}
    assert "sea-bot" in {m.id async for m in sdk.models.list()}


async def test_tenants_never_share_the_prefix_cache_whatever_salt_a_client_sends(
    backend: Backend,
) -> None:
    running = backend.running
    prompt = f"[{backend.name}] A long shared preamble about ships and harbours. " * 40

    async def cached(key: str) -> int:
        out = await running.sdk(key).completions.create(
            model=backend.model,
            prompt=prompt,
            max_tokens=1,
            temperature=0,
            extra_body={"cache_salt": "chosen-by-the-client"},
        )
        assert out.usage is not None
        details = out.usage.prompt_tokens_details
        return (details.cached_tokens if details else None) or 0

    assert await cached(running.acme.key) == 0  # a cold prompt
    assert await cached(running.acme.key) > 0  # the same tenant hits its own cache
    # The same prompt and the same client-sent salt: another tenant does not hit.
    assert await cached(running.globex.key) == 0
    assert await cached(running.globex.key) > 0


async def test_a_premium_request_is_served_past_standard_ones_waiting_for_the_pool(
    backend: Backend,
) -> None:
    """The pool lets one request at a time into the engine: a standard tenant's long
    request holds it and three more wait; a premium request takes the tier's headroom
    and is answered while they still wait, then they are served in turn."""
    running, queue = backend.running, backend.pool.queue
    standard = await add_tenant(running.tenancy, "busy-standard")
    sdk = running.sdk(standard.key)
    long = await sdk.chat.completions.create(
        model=backend.model,
        messages=[{"role": "user", "content": "Write a very long story about the sea."}],
        max_tokens=900,
        temperature=0,
        stream=True,
    )
    await anext(aiter(long))  # it holds the pool's one slot
    waiting = [asyncio.create_task(_greedy(sdk, backend.model, 4)) for _ in range(3)]
    async with asyncio.timeout(10):
        while queue.num_waiting < 3:
            await asyncio.sleep(0.01)

    started = time.monotonic()
    premium = await _greedy(running.sdk(backend.premium.key), backend.model, 4)
    premium_s = time.monotonic() - started
    assert premium
    assert not any(t.done() for t in waiting), "a standard request was served first"
    assert queue.num_waiting == 3
    await long.close()  # the client goes away: its slot is given back

    async with asyncio.timeout(120):
        answers = await asyncio.gather(*waiting)
    assert all(answers)
    total = await backend.running.usage_total(standard.key, 4)
    assert total["requests"] == 4, total
    print(f"\n{backend.name}: premium answered in {premium_s:.2f} s past 3 waiting requests")
