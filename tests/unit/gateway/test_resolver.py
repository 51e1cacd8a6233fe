from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from tenantserve.engine.request import LoraFile, LoraSource
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.gateway.catalog import ServedModel
from tenantserve.gateway.pools import EnginePool
from tenantserve.gateway.resolver import ModelResolver
from tenantserve.registry.adapter_service import AdapterService
from tenantserve.registry.model import ArtifactFile
from tenantserve.tenancy.model import Region, TenantContext
from tenantserve.tiers import Tier

CTX = TenantContext("ten_a", Tier.STANDARD, Region.US)
BASE = "tiny@1.0.0"


class _Adapter:
    def __init__(self, name: str) -> None:
        self.id, self.name, self.base_model = f"ad_{name}", name, BASE
        self.artifact_uri = f"file:///artifacts/adapters/ten_a/{name}/0123"
        self.files = (ArtifactFile("adapter_config.json", 12, "a" * 64),)


class _Adapters:
    """The tenant's ready adapters by name; counts registry reads."""

    def __init__(self) -> None:
        self.ready: dict[str, _Adapter] = {}
        self.reads = 0

    async def resolve(self, ctx: TenantContext, name: str) -> _Adapter | None:
        self.reads += 1
        await asyncio.sleep(0)
        return self.ready.get(name)

    async def local_dir(self, adapter: _Adapter) -> Path:
        return Path("/adapters") / adapter.id


def _resolver(adapters: _Adapters, ttl_s: float) -> ModelResolver:
    resolver = ModelResolver(adapters=cast(AdapterService, adapters), ttl_s=ttl_s)
    model = ServedModel("tiny", cast(Tokenizer, None), max_context_tokens=1024)
    resolver.bind(BASE, EnginePool("shared", cast(Any, None), model))
    return resolver


async def test_an_adapter_routes_to_its_base_versions_pool_with_its_files() -> None:
    adapters = _Adapters()
    adapters.ready["bot"] = _Adapter("bot")
    found = await _resolver(adapters, 60).resolve(CTX, "bot")
    assert found is not None and found.lora is not None
    assert (found.route.pool, found.route.target, found.route.adapter_id) == (
        "shared",
        BASE,
        "ad_bot",
    )
    assert found.lora.path == "/adapters/ad_bot"
    # What a Ray replica on another node pulls its own copy from.
    assert found.lora.source == LoraSource(
        "file:///artifacts/adapters/ten_a/bot/0123",
        (LoraFile("adapter_config.json", 12, "a" * 64),),
    )


async def test_lookups_are_cached_and_a_stale_entry_is_answered_while_it_refreshes() -> None:
    adapters = _Adapters()
    resolver = _resolver(adapters, ttl_s=0.05)
    assert await resolver.resolve(CTX, "bot") is None
    assert await resolver.resolve(CTX, "bot") is None
    assert adapters.reads == 1  # a cached miss
    adapters.ready["bot"] = _Adapter("bot")
    await asyncio.sleep(0.06)
    # Stale: answered at once (still None), one refresh started even for many requests.
    assert [await resolver.resolve(CTX, "bot") for _ in range(5)] == [None] * 5
    await asyncio.sleep(0.01)
    assert adapters.reads == 2
    assert await resolver.resolve(CTX, "bot") is not None


async def test_forget_drops_one_name_at_once() -> None:
    adapters = _Adapters()
    resolver = _resolver(adapters, ttl_s=60)
    assert await resolver.resolve(CTX, "bot") is None
    assert await resolver.resolve(CTX, "other") is None
    adapters.ready["bot"] = _Adapter("bot")
    resolver.forget("ten_a", "bot")
    assert await resolver.resolve(CTX, "bot") is not None
    assert adapters.reads == 3


async def test_an_adapter_of_a_version_no_engine_serves_is_a_503() -> None:
    adapters = _Adapters()
    adapters.ready["bot"] = _Adapter("bot")
    adapters.ready["bot"].base_model = "other@2.0.0"
    with pytest.raises(Exception) as e:
        await _resolver(adapters, 60).resolve(CTX, "bot")
    assert getattr(e.value, "status", None) == 503


async def test_a_tenant_moved_to_a_dedicated_pool_runs_its_adapters_there_when_it_can() -> None:
    adapters = _Adapters()
    adapters.ready["bot"] = _Adapter("bot")
    model = ServedModel("tiny", cast(Tokenizer, None), max_context_tokens=1024)
    other = ServedModel("other", cast(Tokenizer, None), max_context_tokens=1024)
    shared = EnginePool("shared", cast(Any, None), model)
    gold = EnginePool("gold", cast(Any, None), model, dedicated=True)
    elsewhere = EnginePool("elsewhere", cast(Any, None), other, dedicated=True)
    resolver = ModelResolver(
        adapters=cast(AdapterService, adapters), ttl_s=60, pools=(shared, gold, elsewhere)
    )
    resolver.bind(BASE, shared)
    premium = TenantContext("ten_a", Tier.PREMIUM, Region.US)

    async def reserved(pool: str | None) -> str | None:
        found = await resolver.resolve(replace(premium, pool=pool), "bot")
        assert found is not None and found.route.pool == "shared"
        return found.route.reserved_pool

    assert await reserved(None) is None
    assert await reserved("gold") == "gold"  # the same checkpoint: the adapter moves
    assert await reserved("elsewhere") is None  # another model: it stays on shared
    assert adapters.reads == 1  # placement is applied per request, not cached
