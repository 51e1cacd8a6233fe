"""Shadow traffic of a rollout: a share of live requests (the rollout's `shadow_percent`,
chosen by request id) is also sent to the candidate version; its answer is discarded and
only measured — latency, failure, and whether its output differs from what the stable
version answered (for greedy requests, where outputs are comparable).

Mirrors never delay or change the tenant's answer: they start after it is complete, run
in the background at the lowest tier, count against no tenant's limits or quotas, keep
the tenant's own prefix-cache salt (nothing crosses tenants), and are dropped when
`max_in_flight` mirrors are already running. Streamed requests are not mirrored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from tenantserve.engine.request import EngineRequest, SamplingParams
from tenantserve.gateway.pools import EnginePool, UpstreamPool
from tenantserve.gateway.resolver import ModelResolver
from tenantserve.gateway.streaming import Generation
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.tiers import Tier

logger = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 4


class ShadowMirror:
    def __init__(
        self,
        rollouts: RolloutService,
        resolver: ModelResolver,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.rollouts = rollouts
        self.resolver = resolver
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
        tenant_id: str,
        payload: dict[str, Any],
        prompt: Sequence[int] | None,
        sampling: SamplingParams,
        path: str,
        stable_text: str,
    ) -> None:
        """Start one mirror in the background (or drop it when too many run)."""
        pool = self.resolver.pool_of(target)
        if pool is None:
            return
        if len(self._tasks) >= self.max_in_flight:
            self.dropped += 1
            return
        comparable = sampling.temperature == 0 or sampling.seed is not None
        work = self._run(
            pool, target, request_id, tenant_id, payload, prompt, sampling, path,
            stable_text if comparable else None,
        )  # fmt: skip
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the mirrors running now (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(
        self,
        pool: EnginePool | UpstreamPool,
        target: str,
        request_id: str,
        tenant_id: str,
        payload: dict[str, Any],
        prompt: Sequence[int] | None,
        sampling: SamplingParams,
        path: str,
        stable_text: str | None,
    ) -> None:
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
