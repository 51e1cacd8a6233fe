"""The real SmolLM2 model behind the whole gateway, through the official OpenAI SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy
from tests.helpers.server import Running, add_tenant, serve, server_settings

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def real(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    settings = server_settings(tmp_path_factory.mktemp("data"), smollm2_dir)
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme", tier="premium")
        globex = await add_tenant(tenancy.service, "globex", tier="free")
    finally:
        await tenancy.db.dispose()
    async with serve(settings) as (url, service):
        yield Running(url=url, service=service, acme=acme, globex=globex)


async def test_smollm2_answers_a_chat_through_the_sdk(real: Running) -> None:
    out = await real.sdk().chat.completions.create(
        model=real.model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    assert "Paris" in (out.choices[0].message.content or "")
    assert out.usage is not None and out.usage.completion_tokens > 0


async def test_smollm2_streams_with_usage_and_caches_per_tenant(real: Running) -> None:
    messages = [{"role": "user", "content": "Name three primary colors."}]

    async def cached(key: str) -> int:
        stream = await real.sdk(key).chat.completions.create(
            model=real.model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        assert usage is not None and usage.prompt_tokens_details is not None
        return usage.prompt_tokens_details.cached_tokens or 0

    await cached(real.acme.key)
    assert await cached(real.acme.key) > 0
    assert await cached(real.globex.key) == 0
