"""Model names beyond the static catalog: pinned registry versions (`name@version`) and the
caller's own LoRA adapters, each routed to the engine pool serving the base version.

    catalog name / alias      -> the static catalog (no lookup)
    name@version              -> registry.resolve(): archived -> 404 naming the
                                 replacement; deprecated -> served, with Deprecation /
                                 Sunset / Warning headers; on the pool bound to it (the
                                 built-in engine's model, or an upstream pool's
                                 `name@version` model)
    a bound version's name    -> during a rollout (`rollout_route`): stable or canary,
                                 sticky per request id
    an adapter of the caller  -> its base version's engine pool, with a LoraRef (the
                                 adapter's files pulled to this node on first use): its
                                 current version; during a rollout of a new version the
                                 dispatcher asks `resolve_adapter_version` for the
                                 candidate's request ids
    anything else             -> None (admission answers 404, as for any unknown name)

A tenant moved to a dedicated pool (`TenantContext.pool`) runs its versions and adapters
there when that pool can (`runs_version`: a vLLM pool serving the version, or the built-in
engine on the same checkpoint, e.g. a dedicated Ray pool): the route's `reserved_pool`,
set per request, so a move takes effect without waiting for the cache.

Lookups are cached per (tenant, name) (misses too); an entry older than `ttl_s` is
answered while one background lookup refreshes it, so the request path waits on the
registry only for a name's first lookup. Changes made in this process clear what they
touch at once (an adapter upload or deletion its (tenant, name); lifecycle changes and
rollouts everything); other processes see them within the TTL plus one lookup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tenantserve.admission.policy import ModelRoute
from tenantserve.engine.request import LoraFile, LoraRef, LoraSource
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import InvalidRequestError
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.pools import EnginePool, Pool
from tenantserve.gateway.vllm_pool import VllmPool
from tenantserve.registry.adapter_service import AdapterService
from tenantserve.registry.adapters import Adapter, adapter_ref
from tenantserve.registry.model import ModelArchivedError
from tenantserve.registry.service import RegistryService
from tenantserve.tenancy.model import TenantContext

logger = logging.getLogger(__name__)

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
    # What a running rollout counts it as: during an adapter's rollout, the adapter
    # version serving it (`adapter:<tenant>/<name>@<n>`); None: the route's target.
    served_ref: str | None = None


class ModelResolver:
    def __init__(
        self,
        registry: RegistryService | None = None,
        adapters: AdapterService | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        pools: Sequence[Pool] = (),
    ) -> None:
        self.registry = registry
        self.adapters = adapters
        self.ttl_s = ttl_s
        self._pools = {p.name: p for p in pools}  # where moved tenants may be placed
        # Registry version ref -> the pool serving it (`bind`), and back.
        self._pools_by_ref: dict[str, Pool] = {}
        self._refs_by_pool: dict[str, str] = {}
        self._cache: dict[tuple[str, str], tuple[float, Resolved | ApiError | None]] = {}
        # (tenant, adapter name, version) -> a rollout candidate's resolution.
        self._versions: dict[tuple[str, str, int], tuple[float, Resolved | ApiError | None]] = {}
        self._refreshing: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, ref: str, pool: Pool) -> None:
        """`pool` serves the registry version `ref` (known once it is registered)."""
        self._pools_by_ref[ref] = pool
        self._refs_by_pool.setdefault(pool.name, ref)
        self.invalidate()

    def pool_of(self, ref: str) -> Pool | None:
        """The pool serving the registry version `ref`, when bound."""
        return self._pools_by_ref.get(ref)

    def ref_of(self, pool_name: str) -> str | None:
        """The registry version the pool serves, when bound."""
        return self._refs_by_pool.get(pool_name)

    def invalidate(self) -> None:
        self._cache.clear()
        self._versions.clear()

    def forget(self, tenant_id: str, name: str) -> None:
        """Drop one (tenant, name) resolution: its adapter was uploaded or deleted."""
        self._cache.pop((tenant_id, name), None)
        for key in [k for k in self._versions if k[:2] == (tenant_id, name)]:
            del self._versions[key]

    async def resolve_adapter_version(
        self, ctx: TenantContext, name: str, version: int
    ) -> Resolved | None:
        """Version `version` of the caller's adapter `name` (the one a running rollout routes
        a request to), when routable, with its `served_ref`; None otherwise. Cached for the TTL
        (cleared by `forget` / `invalidate`)."""
        if self.adapters is None:
            return None
        key = (ctx.tenant_id, name, version)
        now = time.monotonic()
        hit = self._versions.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            found = hit[1]
        else:
            adapter = await self.adapters.resolve_version(ctx, name, version)
            found = None if adapter is None else await self._adapter(name, adapter)
            if isinstance(found, Resolved):
                found = replace(found, served_ref=adapter_ref(ctx.tenant_id, name, version))
            if len(self._versions) >= MAX_ENTRIES:
                self._versions.clear()
            self._versions[key] = (now, found)
        return self._on_placed_pool(ctx, found) if isinstance(found, Resolved) else None

    async def resolve(self, ctx: TenantContext, name: str) -> Resolved | None:
        """`name` for `ctx`, or None when it is neither a version nor the caller's adapter;
        raises ApiError for an archived version. An entry older than the TTL is still
        answered while one background lookup refreshes it (so the request path waits on
        the registry only for a name's first lookup)."""
        key = (ctx.tenant_id, name)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is None:
            found = await self._lookup(ctx, name)
            self._store(key, now, found)
        else:
            found = hit[1]
            if now - hit[0] >= self.ttl_s and key not in self._refreshing:
                self._refreshing.add(key)
                task = asyncio.create_task(self._refresh(ctx, name, key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if isinstance(found, ApiError):
            raise found
        return None if found is None else self._on_placed_pool(ctx, found)

    def _on_placed_pool(self, ctx: TenantContext, found: Resolved) -> Resolved:
        """`found` on the caller's dedicated pool when it was moved to one that runs it."""
        placed = self._pools.get(ctx.pool) if ctx.pool is not None else None
        base = self._pools_by_ref.get(found.route.target)  # the pool `found` was bound to
        if placed is None or placed is base or not runs_version(placed, found.route.target, base):
            return found
        return replace(found, route=replace(found.route, reserved_pool=placed.name))

    async def _refresh(self, ctx: TenantContext, name: str, key: tuple[str, str]) -> None:
        try:
            self._store(key, time.monotonic(), await self._lookup(ctx, name))
        except Exception:  # the stale entry stays; the next request tries again
            logger.exception("refreshing the resolution of %r failed", name)
        finally:
            self._refreshing.discard(key)

    def _store(self, key: tuple[str, str], now: float, found: Resolved | ApiError | None) -> None:
        if len(self._cache) >= MAX_ENTRIES:
            # Drop the oldest tenth rather than everything.
            oldest = sorted(self._cache.items(), key=lambda kv: kv[1][0])[: MAX_ENTRIES // 10]
            for k, _ in oldest:
                del self._cache[k]
        self._cache[key] = (now, found)

    async def _lookup(self, ctx: TenantContext, name: str) -> Resolved | ApiError | None:
        if "@" in name:
            return await self._version(ctx, name)
        if self.adapters is None:
            return None
        adapter = await self.adapters.resolve(ctx, name)
        if adapter is None:
            return None
        return await self._adapter(name, adapter)

    async def _adapter(self, name: str, adapter: Adapter) -> Resolved | ApiError:
        assert self.adapters is not None
        pool = self._pools_by_ref.get(adapter.base_model)
        # Adapters run on the built-in engine, or are loaded into a vLLM pool's server.
        if not isinstance(pool, EnginePool | VllmPool):
            return ApiError(
                503,
                f"`{name}` adapts {adapter.base_model}, which no engine here serves now.",
                "server_error",
                code="model_not_served",
            )
        path = await self.adapters.local_dir(adapter)
        route = replace(_route(pool, name, adapter.base_model), adapter_id=adapter.id)
        return Resolved(route, _tokenizer(pool), lora_ref(adapter, path))

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
        return Resolved(route, _tokenizer(pool), headers=resolution.headers())


def runs_version(pool: Pool, ref: str, base: Pool | None) -> bool:
    """Whether `pool` can serve the registry version `ref` and its adapters: a vLLM pool
    that serves `ref`, or the built-in engine on the checkpoint of `base` (the pool `ref`
    is bound to)."""
    if isinstance(pool, VllmPool):
        return any(m.name == ref for m in pool.models)
    return (
        isinstance(pool, EnginePool)
        and isinstance(base, EnginePool)
        and pool.model.name == base.model.name
    )


def _tokenizer(pool: Pool) -> Tokenizer | None:
    return pool.model.tokenizer if isinstance(pool, EnginePool) else None


def _route(pool: Pool, model_id: str, target: str) -> ModelRoute:
    if isinstance(pool, EnginePool):
        max_len = pool.model.max_context_tokens
    else:
        max_len = next((m.max_context_tokens for m in pool.models if m.name == target), 0)
    return ModelRoute(
        model_id=model_id, target=target, pool=pool.name, region=pool.region, max_model_len=max_len
    )


def lora_ref(adapter: Adapter, path: Path) -> LoraRef:
    """The engine's reference to a ready adapter: this node's copy at `path`, and its
    artifact, from which a replica on another node pulls its own (Ray pools)."""
    files = tuple(LoraFile(f.path, f.size_bytes, f.sha256) for f in adapter.files)
    return LoraRef(adapter.id, str(path), LoraSource(adapter.artifact_uri, files))
