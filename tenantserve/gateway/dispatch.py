"""Dispatcher: an authenticated, tokenized request through admission and the fair queue
into the engine.

    decide()            model, key scope, residency, size caps  -> ApiError(Denied)
    limiter.reserve()   RPM + TPM (prompt + max_tokens) + slot   -> 429 / 503 + Retry-After
    queue.acquire()     tier priority, VTC fair share           -> QueueFull 429 / Shed 503
    engine.generate()   tenant id, scheduled tier, tenant cache salt

All of it happens before any model work. When the generation closes, however it ends
(finished, failed, client gone), the slot goes back to the queue with the true token
counts, the reservation is committed with the tokens actually used, and the pool's
noisy-neighbour monitor records the tenant's tokens and TTFT (it may demote the tenant).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tenantserve.admission.limiter import RateLimiter, Reject, Reservation
from tenantserve.admission.limits import RateLimits
from tenantserve.admission.policy import AdmissionRequest, Denied, PolicyConfig, decide
from tenantserve.engine.request import EngineRequest, SamplingParams
from tenantserve.gateway.catalog import ModelCatalog
from tenantserve.gateway.engine_client import EngineClient
from tenantserve.gateway.errors import api_error_from_denied, api_error_from_reject
from tenantserve.gateway.noisy_neighbors import NoisyNeighborMonitor
from tenantserve.gateway.schemas import ChatCompletionRequest, CompletionRequest
from tenantserve.gateway.streaming import Generation
from tenantserve.scheduling.fair_queue import FairQueue, Ticket
from tenantserve.tenancy.model import TenantContext

logger = logging.getLogger(__name__)


def rate_limits_for(ctx: TenantContext) -> RateLimits:
    """The tier's default limits with the tenant's overrides applied."""
    base = RateLimits.for_tier(ctx.tier)
    own = ctx.limits
    return RateLimits(
        requests_per_minute=own.requests_per_minute or base.requests_per_minute,
        tokens_per_minute=own.tokens_per_minute or base.tokens_per_minute,
        max_concurrent=own.max_concurrent or base.max_concurrent,
    )


class Dispatcher:
    """Admits, rate-limits and schedules requests for one pool's engine."""

    def __init__(
        self,
        engine: EngineClient,
        catalog: ModelCatalog,
        limiter: RateLimiter,
        queue: FairQueue,
        policy: PolicyConfig,
        noisy_neighbors: NoisyNeighborMonitor | None = None,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.limiter = limiter
        self.queue = queue
        self.policy = policy
        self.noisy_neighbors = noisy_neighbors

    async def dispatch(
        self,
        ctx: TenantContext,
        request_id: str,
        body: ChatCompletionRequest | CompletionRequest,
        prompt: Sequence[int],
        prompt_param: str,
    ) -> Generation:
        """The started generation; raises ApiError (denied, rate limited), Overloaded (queue)
        or what the engine raised at start. Nothing is held once it raises."""
        admission = AdmissionRequest(body.model, len(prompt), body.requested_max_tokens())
        decision = decide(ctx, admission, self.catalog.routes(ctx), self.policy)
        if isinstance(decision, Denied):
            if decision.param == "messages":
                decision = Denied(decision.status, decision.code, decision.message, prompt_param)
            raise api_error_from_denied(decision)
        sampling = SamplingParams(
            max_tokens=decision.max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            seed=body.seed,
            stop=body.stop_sequences(),
        )

        limits = rate_limits_for(ctx)
        tokens = len(prompt) + decision.max_tokens
        reserved = await self.limiter.reserve(ctx.tenant_id, ctx.tier, limits, tokens, request_id)
        if isinstance(reserved, Reject):
            raise api_error_from_reject(reserved)
        reservation = reserved.reservation

        ticket = Ticket(
            request_id=request_id,
            tenant_id=ctx.tenant_id,
            tier=ctx.tier,
            est_input_tokens=len(prompt),
            est_output_tokens=decision.max_tokens,
            arrival_time=self.queue.clock(),
        )
        try:
            grant = await self.queue.acquire(ticket)
        except BaseException:
            await self.limiter.commit(reservation, 0)
            raise

        async def release(generation: Generation) -> None:
            usage = generation.usage()
            self.queue.release(grant, usage.prompt_tokens, usage.completion_tokens)
            if self.noisy_neighbors is not None:
                ttft_s = generation.metrics.ttft_s if generation.metrics else None
                self.noisy_neighbors.record(ctx.tenant_id, usage.total_tokens, ttft_s)
            await self._commit(reservation, usage.total_tokens)

        request = EngineRequest(
            request_id=request_id,
            prompt_token_ids=tuple(prompt),
            sampling=sampling,
            tenant_id=ctx.tenant_id,
            tier=grant.tier,
            cache_salt=ctx.tenant_id,
        )
        try:
            return await Generation.start(self.engine, request, on_close=release)
        except BaseException:
            # `release` ran when the failed generation closed; these are no-ops then.
            self.queue.release(grant, 0, 0)
            await self._commit(reservation, 0)
            raise

    async def _commit(self, reservation: Reservation, actual_tokens: int) -> None:
        try:
            await self.limiter.commit(reservation, actual_tokens)
        except Exception:  # the slot expires on its own (slot_ttl_s)
            logger.exception("rate limiter commit failed for %s", reservation.request_id)
