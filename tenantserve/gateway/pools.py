"""Serving pools: where admitted requests run. Each pool has its own backend, fair queue
(tier priority + VTC in front of the backend) and noisy-neighbour monitor, a region
(residency), and optionally the premium tenants it is reserved for.

    EnginePool     the built-in engine (`engine/`): token ids in, token outputs back
    UpstreamPool   an external OpenAI-compatible server (`upstream.py`): the request
                   forwarded, the reply rewritten and accounted

The catalog (`catalog.py`) maps model names to pools; admission (`decide()`) picks the
pool of a request: the tenant's reserved pool when it has one for the model, else the
model's shared pool in the tenant's region.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from tenantserve.engine.request import LoraRef
from tenantserve.gateway.catalog import CatalogEntry, ModelCatalog, ServedModel
from tenantserve.gateway.engine_client import EngineClient
from tenantserve.gateway.noisy_neighbors import NoisyNeighborMonitor
from tenantserve.gateway.upstream import OpenAIUpstream
from tenantserve.scheduling.fair_queue import FairQueue
from tenantserve.tenancy.model import Region, TenantContext


def connections_for(queue: FairQueue) -> int:
    """HTTP connections an upstream pool needs: one per request its queue lets through,
    premium ones past a full pool included (with fewer, those wait for a connection)."""
    return queue.config.max_in_flight + queue.config.max_headroom


@runtime_checkable
class ScalableEngine(Protocol):
    """An engine whose replicas a dedicated pool holds up only while in use (Ray Serve's
    `RayServeEngineClient`)."""

    async def hold_replicas(self, hold: bool, timeout_s: float) -> None: ...


@dataclass(frozen=True)
class EnginePool:
    """The built-in engine serving one model."""

    name: str
    engine: EngineClient
    model: ServedModel
    queue: FairQueue = field(default_factory=FairQueue)
    region: Region = Region.US
    reserved_for: frozenset[str] = frozenset()
    # Serves only `reserved_for` and the tenants moved onto it (`gateway/tenant_move.py`).
    dedicated: bool = False
    noisy_neighbors: NoisyNeighborMonitor | None = None

    async def start(self) -> None:
        await self.engine.start()

    async def shutdown(self) -> None:
        await self.engine.shutdown()

    async def hold_capacity(self, hold: bool, timeout_s: float) -> bool:
        """A dedicated pool whose engine scales (Ray Serve): bring its replicas up and
        keep them (`hold`), or let them go; False when the pool has nothing to scale."""
        if not self.dedicated or not isinstance(self.engine, ScalableEngine):
            return False
        await self.engine.hold_replicas(hold, timeout_s)
        return True


@dataclass(frozen=True)
class UpstreamModel:
    """A model an upstream serves: the name tenants use and the upstream's own."""

    name: str
    upstream_name: str
    max_context_tokens: int
    created: int = 0


@dataclass(frozen=True)
class UpstreamPool:
    """An external OpenAI-compatible server."""

    name: str
    upstream: OpenAIUpstream
    models: tuple[UpstreamModel, ...]
    queue: FairQueue = field(default_factory=FairQueue)
    region: Region = Region.US
    reserved_for: frozenset[str] = frozenset()
    # Serves only `reserved_for` and the tenants moved onto it (`gateway/tenant_move.py`).
    dedicated: bool = False
    noisy_neighbors: NoisyNeighborMonitor | None = None

    async def start(self) -> None:
        await self.upstream.start()

    async def shutdown(self) -> None:
        await self.upstream.shutdown()

    async def prepare(
        self, payload: dict[str, Any], ctx: TenantContext, lora: LoraRef | None
    ) -> Callable[[], None]:
        """Adapt a request's forwarded JSON to this backend (a vLLM pool's tenant salt,
        priority, adapter: `vllm_pool.py`); returns what to call once it has ended."""
        return release_nothing

    def upstream_name(self, model: str) -> str:
        for m in self.models:
            if m.name == model:
                return m.upstream_name
        raise KeyError(model)


def release_nothing() -> None:
    return None


Pool = EnginePool | UpstreamPool


def build_catalog(pools: Iterable[Pool]) -> ModelCatalog:
    """Every model of every pool, with the pool's region and reservation."""
    entries: list[CatalogEntry] = []
    for pool in pools:
        if isinstance(pool, EnginePool):
            m = pool.model
            entries.append(
                CatalogEntry(
                    m.name,
                    pool.name,
                    pool.region,
                    m.max_context_tokens,
                    m.created,
                    m.tokenizer,
                    pool.reserved_for,
                    pool.dedicated,
                )
            )
        else:
            # `name@version` models are registry versions: resolved through the registry
            # (pinned requests, rollouts), not static names.
            entries.extend(
                CatalogEntry(
                    m.name,
                    pool.name,
                    pool.region,
                    m.max_context_tokens,
                    m.created,
                    None,
                    pool.reserved_for,
                    pool.dedicated,
                )
                for m in pool.models
                if "@" not in m.name
            )
    # A model the gateway can tokenize keeps its tokenizer on every pool serving it.
    tokenizers = {e.name: e.tokenizer for e in entries if e.tokenizer is not None}
    return ModelCatalog(replace(e, tokenizer=tokenizers.get(e.name)) for e in entries)
