"""Shadow traffic of a rollout: a share of live requests (the rollout's `shadow_percent`,
chosen by request id) is also sent to the candidate version; its answer is discarded and
only measured — latency, failure, and whether its output differs from what the stable
version answered (for greedy requests, where outputs are comparable).

Mirrors never delay or change the tenant's answer: they start after it is complete, run
in the background at the lowest tier, count against no tenant's limits or quotas, keep
the tenant's own prefix-cache salt (nothing crosses tenants), and are dropped when
`max_in_flight` mirrors are already running. Streamed requests are not mirrored. A new
version of a tenant's adapter is shadowed the same way: the mirror runs the request with
the candidate version's files, for that tenant only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tenantserve.engine.request import EngineRequest, LoraRef, SamplingParams
from tenantserve.gateway.pools import EnginePool, Pool, UpstreamPool
from tenantserve.gateway.resolver import ModelResolver
from tenantserve.gateway.streaming import Generation
from tenantserve.registry.adapters import is_adapter_key, parse_adapter_ref
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.tenancy.model import TenantContext
from tenantserve.tiers import Tier

logger = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 4


class ShadowMirror:
    def __init__(
        self,
        rollouts: RolloutService,
        resolver: ModelResolver,
        pools: Mapping[str, Pool],
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.rollouts = rollouts
        self.resolver = resolver
        self.pools = pools
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def target(self, served_ref: str | None, request_id: str) -> str | None:
        """The candidate to mirror this request to, when its model's rollout shadows it."""
        if served_ref is None:
            return None
        target = self.rollouts.shadow_target(served_ref.partition("@")[0], request_id)
        return target if target is not None and target != served_ref else None

    def mirror(
        self,
        target: str,
        request_id: str,
        ctx: TenantContext,
        payload: dict[str, Any],
        prompt: Sequence[int] | None,
        sampling: SamplingParams,
        path: str,
        stable_text: str,
    ) -> None:
        """Start one mirror in the background (or drop it when too many run). `target` is
        a model version, or a version of the caller's adapter (`adapter:<tenant>/...`)."""
        if len(self._tasks) >= self.max_in_flight:
            self.dropped += 1
            return
        comparable = sampling.temperature == 0 or sampling.seed is not None
        work = self._run(
            target, request_id, ctx, payload, prompt, sampling, path,
            stable_text if comparable else None,
        )  # fmt: skip
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the mirrors running now (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _target(
        self, target: str, ctx: TenantContext
    ) -> tuple[EnginePool | UpstreamPool, LoraRef | None] | None:
        """The pool (and adapter files) serving `target`, or None."""
        if not is_adapter_key(target):
            pool = self.resolver.pool_of(target)
            return None if pool is None else (pool, None)
        tenant_id, name, version = parse_adapter_ref(target)
        if tenant_id != ctx.tenant_id:  # never: the key holds the caller's tenant id
            return None
        resolved = await self.resolver.resolve_adapter_version(ctx, name, version)
        if resolved is None or resolved.lora is None:
            return None
        adapter_pool = self.pools.get(resolved.route.pool)
        return None if adapter_pool is None else (adapter_pool, resolved.lora)

    async def _run(
        self,
        target: str,
        request_id: str,
        ctx: TenantContext,
        payload: dict[str, Any],
        prompt: Sequence[int] | None,
        sampling: SamplingParams,
        path: str,
        stable_text: str | None,
    ) -> None:
        found = await self._target(target, ctx)
        if found is None:
            return
        pool, lora = found
        tenant_id = ctx.tenant_id
        shadow_id = f"{request_id}-shadow"
        started = time.perf_counter()
        text: str | None = None
        try:
            if isinstance(pool, EnginePool):
                if prompt is None:
                    return
                request = EngineRequest(
                    request_id=shadow_id,
                    prompt_token_ids=tuple(prompt),
                    sampling=sampling,
                    tenant_id=tenant_id,
                    tier=Tier.FREE,
                    lora=lora,
                    cache_salt=tenant_id,
                )
                generation = await Generation.start(pool.engine, request)
                text, _ = await generation.collect()
            else:
                body = {**payload, "model": pool.upstream_name(target), "stream": False}
                body["max_tokens"] = sampling.max_tokens
                body.pop("stream_options", None)
                reply = await pool.upstream.complete(path, body, shadow_id, {})
                text = _text(json.loads(reply.body))
        except Exception as e:
            latency_s = time.perf_counter() - started
            logger.info("shadow %s on %s failed: %s", shadow_id, target, e)
            self.rollouts.observe(target, latency_s, error=True)
            return
        latency_s = time.perf_counter() - started
        diverged = stable_text is not None and text != stable_text
        self.rollouts.observe(target, latency_s, error=False, diverged=diverged)


def _text(completion: dict[str, Any]) -> str | None:
    choices = completion.get("choices") or [{}]
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict):
        return str(message.get("content") or "")
    return str(first.get("text") or "")
