"""Dispatcher: an authenticated request through admission and its pool's fair queue into
the pool's backend.

    decide()            model, key scope, residency, size caps, pool -> ApiError(Denied)
    check_quotas()      the tenant's day/month quotas (ledger usage) -> 429 quota_exceeded;
                        soft: max_tokens clamped, `soft_quota_exceeded` event
    limiter.reserve()   RPM + TPM (prompt + max_tokens) + slot         -> 429 / 503 + Retry-After
    queue.acquire()     tier priority, VTC fair share (the pool's)    -> QueueFull 429 / Shed 503
    backend             engine: tenant id, scheduled tier, tenant cache salt
                        (`gateway/engine_start.py`)
                        upstream: the request forwarded, usage from its reply
                        (`gateway/upstream_forward.py`)

All of it happens before any model work. The result of the first three is an
`Admission`; when it closes, however the request ended (finished, failed, client gone),
the slot goes back to the queue with the true token counts, the reservation is committed
with the tokens actually used, the quota ledger is charged, and the pool's
noisy-neighbour monitor records the tenant's tokens and TTFT (it may demote the tenant).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from tenantserve.admission.limiter import RateLimiter, Reject, Reservation
from tenantserve.admission.limits import RateLimits
from tenantserve.admission.policy import (
    AdmissionRequest,
    Denied,
    PolicyConfig,
    decide,
)
from tenantserve.admission.quota_ledger import QuotaLedger
from tenantserve.admission.quota_ledger_local import LocalQuotaLedger
from tenantserve.errors import InvalidRequestError
from tenantserve.gateway.admitted import Admission
from tenantserve.gateway.catalog import ModelCatalog
from tenantserve.gateway.engine_start import sampling_for, start_generation
from tenantserve.gateway.errors import (
    ApiError,
    api_error_from_denied,
    api_error_from_overload,
    api_error_from_reject,
)
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.pools import Pool
from tenantserve.gateway.quota_gate import QuotaGate
from tenantserve.gateway.request_log import RequestLog, rejected_record
from tenantserve.gateway.resolver import ModelResolver, Resolved
from tenantserve.gateway.schemas import ChatCompletionRequest, CompletionRequest
from tenantserve.gateway.shadow import ShadowMirror
from tenantserve.gateway.streaming import Generation
from tenantserve.metering.meter import Meter
from tenantserve.registry.adapters import adapter_rollout_key, parse_adapter_ref
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.scheduling.queue_types import Overloaded, Ticket
from tenantserve.tenancy.model import TenantContext

if TYPE_CHECKING:
    from tenantserve.observability.telemetry import Telemetry

logger = logging.getLogger(__name__)

Body = ChatCompletionRequest | CompletionRequest


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
    """Admits, rate-limits and schedules requests onto the pools."""

    def __init__(
        self,
        pools: Sequence[Pool],
        catalog: ModelCatalog,
        limiter: RateLimiter,
        policy: PolicyConfig,
        quota_ledger: QuotaLedger | None = None,
        events: EventLog | None = None,
        resolver: ModelResolver | None = None,
        rollouts: RolloutService | None = None,
        meter: Meter | None = None,
        request_log: RequestLog | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.meter = meter
        # Metrics and traces of each admitted request's end and each refusal.
        self.telemetry = telemetry
        self.request_log = request_log if request_log is not None else RequestLog()
        self.resolver = resolver
        self.rollouts = rollouts
        self.pools: Mapping[str, Pool] = {p.name: p for p in pools}
        self.shadow = (
            ShadowMirror(rollouts, resolver, self.pools)
            if rollouts is not None and resolver is not None
            else None
        )
        self.catalog = catalog
        self.limiter = limiter
        self.policy = policy
        self.events = events if events is not None else EventLog()
        self.quotas = QuotaGate(quota_ledger or LocalQuotaLedger(), self.events)

    async def admit(
        self,
        ctx: TenantContext,
        request_id: str,
        body: Body,
        num_prompt_tokens: int,
        prompt_param: str,
        resolved: Resolved | None = None,
    ) -> Admission:
        """Decide, reserve, queue; raises ApiError (denied, rate limited) or Overloaded
        (queue), after writing the refusal's request record. Nothing is held once it
        raises. `resolved`: what `resolve` found for a name outside the static catalog."""
        started_wall, started = time.time(), time.perf_counter()
        try:
            admission = await self._admit(
                ctx, request_id, body, num_prompt_tokens, prompt_param, resolved, started
            )
        except (ApiError, Overloaded) as e:
            error = api_error_from_overload(e) if isinstance(e, Overloaded) else e
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.request_log.write(
                rejected_record(
                    request_id,
                    ctx.tenant_id,
                    ctx.tier.value,
                    ctx.region.value,
                    body.model,
                    error.status,
                    error.detail.code,
                    started_wall,
                    elapsed_ms,
                )
            )
            if self.telemetry is not None:
                model = self.model_label(ctx, body.model, resolved)
                self.telemetry.rejected(ctx, model, e, started)
            raise
        if ctx.log_content:
            admission.prompt_text = body.prompt_text()
        return admission

    async def _admit(
        self,
        ctx: TenantContext,
        request_id: str,
        body: Body,
        num_prompt_tokens: int,
        prompt_param: str,
        resolved: Resolved | None,
        started: float,
    ) -> Admission:
        admission = AdmissionRequest(body.model, num_prompt_tokens, body.requested_max_tokens())
        routes = self.catalog.routes(ctx)
        if resolved is not None:
            routes = {**routes, body.model: resolved.route}
        decision = decide(ctx, admission, routes, self.policy)
        if isinstance(decision, Denied):
            if decision.param == "messages":
                decision = Denied(decision.status, decision.code, decision.message, prompt_param)
            raise api_error_from_denied(decision)
        pool = self.pools.get(decision.pool)
        if pool is None:  # a catalog naming a pool that is not configured
            raise ApiError(503, f"pool {decision.pool} is not running", "server_error")
        if ctx.quotas:
            decision = await self.quotas.check(ctx, decision, num_prompt_tokens)

        limits = rate_limits_for(ctx)
        tokens = num_prompt_tokens + decision.max_tokens
        reserved = await self.limiter.reserve(ctx.tenant_id, ctx.tier, limits, tokens, request_id)
        if isinstance(reserved, Reject):
            raise api_error_from_reject(reserved)
        reservation = reserved.reservation

        ticket = Ticket(
            request_id=request_id,
            tenant_id=ctx.tenant_id,
            tier=ctx.tier,
            est_input_tokens=num_prompt_tokens,
            est_output_tokens=decision.max_tokens,
            arrival_time=pool.queue.clock(),
        )
        try:
            grant = await pool.queue.acquire(ticket)
        except BaseException:
            await self._commit(reservation, 0)
            raise
        return Admission(
            ctx=ctx,
            request_id=request_id,
            pool=pool,
            decision=decision,
            grant=grant,
            num_prompt_tokens=num_prompt_tokens,
            admission_s=time.perf_counter() - started,
            started_at=started,
            _dispatcher=self,
            _reservation=reservation,
            lora=resolved.lora if resolved is not None else None,
            headers=resolved.headers if resolved is not None else {},
            served_ref=self._served_ref(pool, resolved),
        )

    def model_label(self, ctx: TenantContext, model: str, resolved: Resolved | None) -> str:
        """What a metric may call the model a request named: the catalog or registry name
        it resolves to for the caller, `unknown` for anything else (a client string)."""
        if resolved is not None:
            return resolved.route.target
        route = self.catalog.routes(ctx).get(model)
        return route.target if route is not None else "unknown"

    def mirrors(self, admission: Admission) -> bool:
        """Whether a rollout shadows this request (its answer is then mirrored)."""
        return (
            self.shadow is not None
            and self.shadow.target(admission.served_ref, admission.request_id) is not None
        )

    def mirror(
        self,
        admission: Admission,
        body: Body,
        raw: bytes,
        prompt: Sequence[int] | None,
        path: str,
        stable_text: str | None,
    ) -> None:
        """Send a copy of a finished, non-streamed request to its model's rollout candidate
        when the rollout shadows this request id (`gateway/shadow.py`)."""
        if self.shadow is None or stable_text is None:
            return
        target = self.shadow.target(admission.served_ref, admission.request_id)
        if target is None:
            return
        self.shadow.mirror(
            target,
            admission.request_id,
            admission.ctx,
            json.loads(raw),
            prompt,
            sampling_for(admission, body),
            path,
            stable_text,
        )

    def _served_ref(self, pool: Pool, resolved: Resolved | None) -> str | None:
        if resolved is not None and resolved.served_ref is not None:
            return resolved.served_ref  # an adapter version
        if resolved is not None and "@" in resolved.route.target:
            return resolved.route.target
        return self.resolver.ref_of(pool.name) if self.resolver is not None else None

    async def adapter_cards(self, ctx: TenantContext) -> list[tuple[str, int]]:
        """(name, created) of the caller's ready adapters, which `model` may name."""
        if self.resolver is None or self.resolver.adapters is None:
            return []
        adapters = await self.resolver.adapters.list(ctx)
        return [(a.name, int(a.created_at.timestamp())) for a in adapters if a.is_routable]

    async def resolve(self, ctx: TenantContext, model: str, request_id: str) -> Resolved | None:
        """What `model` names beyond the static catalog: a pinned registry version or the
        caller's adapter; or, for a catalog name while a rollout of its version runs, the
        canary version for the request ids the rollout sends there (sticky); the same for
        a new version of the caller's adapter being rolled out (keyed by the caller's
        tenant id, so it never routes another tenant's requests). None: the static route
        (or an unknown name: admission answers 404)."""
        if self.resolver is None:
            return None
        static = self.catalog.routes(ctx).get(model)
        if static is None:
            resolved = await self.resolver.resolve(ctx, model)
            return await self._adapter_canary(ctx, model, request_id, resolved)
        stable = self.resolver.ref_of(static.pool)
        if self.rollouts is None or stable is None:
            return None
        ref = self.rollouts.route(stable.partition("@")[0], request_id)
        if ref is None or ref == stable:
            return None
        try:
            canary = await self.resolver.resolve(ctx, ref)
        except ApiError:  # the candidate is not served here (any more): stay on stable
            return None
        if canary is None:
            return None
        return replace(canary, route=replace(canary.route, model_id=model), headers={})

    async def _adapter_canary(
        self, ctx: TenantContext, model: str, request_id: str, resolved: Resolved | None
    ) -> Resolved | None:
        """While a rollout of the caller's adapter `model` runs: the version it routes
        `request_id` to (stable or candidate, sticky), with that version's ref as what the
        rollout observes; else `resolved` (its current version, or whatever it is)."""
        if resolved is None or resolved.lora is None or self.rollouts is None:
            return resolved
        assert self.resolver is not None
        ref = self.rollouts.route(adapter_rollout_key(ctx.tenant_id, model), request_id)
        if ref is None:
            return resolved
        try:
            tenant_id, name, version = parse_adapter_ref(ref)
        except InvalidRequestError:
            return resolved
        if (tenant_id, name) != (ctx.tenant_id, model):
            return resolved
        routed = await self.resolver.resolve_adapter_version(ctx, name, version)
        return routed if routed is not None else resolved

    async def dispatch(
        self,
        ctx: TenantContext,
        request_id: str,
        body: Body,
        prompt: Sequence[int],
        prompt_param: str,
    ) -> Generation:
        """Admit a tokenized request and start it on a built-in engine pool."""
        admission = await self.admit(ctx, request_id, body, len(prompt), prompt_param)
        return await start_generation(admission, body, prompt)

    async def _commit(self, reservation: Reservation, actual_tokens: int) -> None:
        try:
            await self.limiter.commit(reservation, actual_tokens)
        except Exception:  # the slot expires on its own (slot_ttl_s)
            logger.exception("rate limiter commit failed for %s", reservation.request_id)
