"""`VllmPool`: an upstream pool of a vLLM OpenAI-compatible server, attached (`base_url`)
or started by tenantserve (`launch`, `engine_vllm/launcher.py`). Requests are forwarded
by the upstream machinery (`upstream.py`, usage read from vLLM's reply); before that,
`prepare` makes each one the tenant's, whatever the client sent:

    cache_salt   HMAC-SHA256(secret, tenant id): vLLM's prefix cache is keyed by it, so
                 tenants never share cached blocks and none can guess another's salt;
                 a client's own `cache_salt` is replaced
    priority     the tenant's tier (premium 0 < standard 1 < free 2: lower runs first
                 under vLLM's `--scheduling-policy priority`); a client's is replaced
    model        a tenant's adapter: loaded into vLLM on first use (`vllm_adapters.py`),
                 held until the request ends
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from tenantserve.engine.request import LoraRef
from tenantserve.engine_vllm.launcher import VllmLauncher
from tenantserve.gateway.pools import (
    UpstreamModel,
    UpstreamPool,
    connections_for,
    release_nothing,
)
from tenantserve.gateway.upstream import OpenAIUpstream
from tenantserve.gateway.vllm_adapters import VllmAdapters
from tenantserve.pool_config import PoolConfig
from tenantserve.scheduling.fair_queue import FairQueue
from tenantserve.tenancy.model import TenantContext
from tenantserve.tiers import Tier

# vLLM serves the lowest value first.
_PRIORITY = {Tier.PREMIUM: 0, Tier.STANDARD: 1, Tier.FREE: 2}


def cache_salt(secret: bytes, tenant_id: str) -> str:
    """The tenant's prefix-cache salt: HMAC-SHA256 of its id (hex), unguessable without
    the secret and the same on every gateway replica that shares it."""
    return hmac.new(secret, tenant_id.encode(), hashlib.sha256).hexdigest()


def vllm_priority(tier: Tier) -> int:
    """vLLM's `priority` of a tier's requests (lower is served first)."""
    return _PRIORITY[tier]


@dataclass(frozen=True)
class VllmPool(UpstreamPool):
    """A vLLM server: an upstream pool that salts, prioritises and adapts each request."""

    adapters: VllmAdapters | None = None
    salt_secret: bytes = b""
    launcher: VllmLauncher | None = None

    async def start(self) -> None:
        if self.launcher is not None:
            await self.launcher.start()
        await super().start()

    async def shutdown(self) -> None:
        await super().shutdown()
        if self.adapters is not None:
            await self.adapters.client.aclose()
        if self.launcher is not None:
            await self.launcher.stop()

    async def prepare(
        self, payload: dict[str, Any], ctx: TenantContext, lora: LoraRef | None
    ) -> Callable[[], None]:
        """Set the tenant's `cache_salt` and `priority` (replacing the client's) and, for an
        adapter, its vLLM name as `model`; returns what to call once the request ended."""
        payload["cache_salt"] = cache_salt(self.salt_secret, ctx.tenant_id)
        payload["priority"] = vllm_priority(ctx.tier)
        if lora is None or self.adapters is None:
            return release_nothing
        name = await self.adapters.acquire(lora)
        payload["model"] = name
        return partial(self.adapters.release, name)


def build_vllm_pool(
    cfg: PoolConfig,
    models: tuple[UpstreamModel, ...],
    queue: FairQueue,
    data_dir: Path,
    **pool_fields: Any,
) -> VllmPool:
    """The pool of a `kind = "vllm"` config: its launcher (when it starts the server), the
    upstream client and the adapter manager, both on the server's URL."""
    vllm = cfg.vllm
    assert vllm is not None
    launcher = None
    base_url = cfg.base_url
    if vllm.launch is not None:
        served = tuple(dict.fromkeys(m.upstream_name for m in models))
        launcher = VllmLauncher(
            vllm.launch,
            served,
            data_dir / "logs" / f"vllm-{cfg.name}.log",
            max_loras=vllm.max_loras,
            max_lora_rank=vllm.max_lora_rank,
        )
        base_url = launcher.base_url
    secret = vllm.cache_salt_secret.encode() if vllm.cache_salt_secret else secrets.token_bytes(32)
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    control = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=cfg.timeout_s)
    return VllmPool(
        name=cfg.name,
        upstream=OpenAIUpstream(base_url, cfg.api_key, cfg.timeout_s, connections_for(queue)),
        models=models,
        queue=queue,
        region=cfg.region,
        reserved_for=frozenset(cfg.reserved_for),
        adapters=VllmAdapters(control, vllm.max_loras),
        salt_secret=secret,
        launcher=launcher,
        **pool_fields,
    )
