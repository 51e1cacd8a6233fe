"""Model names beyond the static catalog: pinned registry versions (`name@version`) and the
caller's own LoRA adapters, each routed to the engine pool serving the base version.

    catalog name / alias      -> the static catalog (no lookup)
    name@version              -> registry.resolve(): archived -> 404 naming the
                                 replacement; deprecated -> served, with Deprecation /
                                 Sunset / Warning headers
    an adapter of the caller  -> its base version's engine pool, with a LoraRef (the
                                 adapter's files pulled to this node on first use)
    anything else             -> None (admission answers 404, as for any unknown name)

Lookups are cached per (tenant, name) for `ttl_s` (misses too), so the request path reads
the registry at most once per TTL per name; changes made in this process (uploads,
deletions, lifecycle changes) clear the cache at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tenantserve.admission.policy import ModelRoute
from tenantserve.engine.request import LoraRef
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import InvalidRequestError
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.pools import EnginePool
from tenantserve.registry.adapter_service import AdapterService
from tenantserve.registry.model import ModelArchivedError
from tenantserve.registry.service import RegistryService
from tenantserve.tenancy.model import TenantContext

DEFAULT_TTL_S = 2.0
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class Resolved:
    """A name resolved for one caller: where it runs, with which adapter, what to tell."""

    route: ModelRoute
    # The base model's tokenizer (the pool's engine serves it).
    tokenizer: Tokenizer | None = None
    lora: LoraRef | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class ModelResolver:
    def __init__(
        self,
        registry: RegistryService | None = None,
        adapters: AdapterService | None = None,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.registry = registry
        self.adapters = adapters
        self.ttl_s = ttl_s
        # Registry version ref -> the engine pool serving it (`bind`).
        self._pools_by_ref: dict[str, EnginePool] = {}
        self._cache: dict[tuple[str, str], tuple[float, Resolved | ApiError | None]] = {}

    def bind(self, ref: str, pool: EnginePool) -> None:
        """`pool` serves the registry version `ref` (known once it is registered)."""
        self._pools_by_ref[ref] = pool
        self.invalidate()

    def invalidate(self) -> None:
        self._cache.clear()

    async def resolve(self, ctx: TenantContext, name: str) -> Resolved | None:
        """`name` for `ctx`, or None when it is neither a version nor the caller's adapter;
        raises ApiError for an archived version."""
        key = (ctx.tenant_id, name)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            found = hit[1]
        else:
            found = await self._lookup(ctx, name)
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = (now, found)
        if isinstance(found, ApiError):
            raise found
        return found

    async def _lookup(self, ctx: TenantContext, name: str) -> Resolved | ApiError | None:
        if "@" in name:
            return await self._version(ctx, name)
        if self.adapters is None:
            return None
        adapter = await self.adapters.resolve(ctx, name)
        if adapter is None:
            return None
        pool = self._pools_by_ref.get(adapter.base_model)
        if pool is None:
            return ApiError(
                503,
                f"`{name}` adapts {adapter.base_model}, which no engine here serves now.",
                "server_error",
                code="model_not_served",
            )
        path = await self.adapters.local_dir(adapter)
        route = replace(_route(pool, name, adapter.base_model), adapter_id=adapter.id)
        return Resolved(route, pool.model.tokenizer, LoraRef(adapter.id, str(path)))

    async def _version(self, ctx: TenantContext, ref: str) -> Resolved | ApiError | None:
        if self.registry is None:
            return None
        try:
            resolution = await self.registry.resolve(ref, ctx.tenant_id)
        except ModelArchivedError as e:
            return ApiError(404, str(e), code="model_archived", param="model")
        except InvalidRequestError:  # unknown, another tenant's, or not a version ref
            return None
        version = resolution.version
        pool = self._pools_by_ref.get(version.ref)
        if pool is None:
            return ApiError(
                503,
                f"`{version.ref}` is registered but no engine here serves it now.",
                "server_error",
                code="model_not_served",
            )
        route = _route(pool, ref, version.ref)
        return Resolved(route, pool.model.tokenizer, headers=resolution.headers())


def _route(pool: EnginePool, model_id: str, target: str) -> ModelRoute:
    return ModelRoute(
        model_id=model_id,
        target=target,
        pool=pool.name,
        region=pool.region,
        max_model_len=pool.model.max_context_tokens,
    )
