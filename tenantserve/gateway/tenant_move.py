"""`TenantMover`: moving a tenant between the shared pools and a dedicated pool without a
failed request.

    check     the pool exists, is dedicated (or reserved for the tenant), is in the
              tenant's region and serves its models; the tenant is premium (dedicated
              capacity is the premium tier's isolation)
    bring up  a dedicated Ray pool scaled to zero gets its replicas (and the move waits
              for them); then the pool's backend must answer (engine stats / the
              upstream's `/models`)
    warm      the tenant's ready adapters that the pool can run (`runs_version`) move
              with it: loaded now into a vLLM server, on first use by a Ray replica
    switch    `tenants.pool` written: one row, so the switch is atomic. This gateway
              routes the tenant's next request there at once; other gateways within
              their auth cache TTL (until then they route to the old pool, which still
              serves)
    drain     wait until the tenant has nothing left in this gateway's other pools, and
              at least the auth TTL, so no gateway still sends it to the old pool

    release   the last tenant leaving a dedicated Ray pool lets it scale back to zero

Requests admitted before the switch finish where they started: nothing is cut.
Quotas, rate limits and metering are keyed by tenant, not by pool, so they carry on
unchanged. Billing has no gap and no double count, because each request is one usage
event wherever it ran. The move is audited (`tenant.move`) with its report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from tenantserve.audit.recorder import AuditRecorder, NullRecorder
from tenantserve.engine.request import LoraRef
from tenantserve.gateway.auth import Authenticator
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.pools import EnginePool, Pool
from tenantserve.gateway.resolver import ModelResolver, runs_version
from tenantserve.gateway.vllm_pool import VllmPool
from tenantserve.registry.adapter_service import AdapterService
from tenantserve.tenancy.model import Tenant, TenantContext
from tenantserve.tenancy.service import TenancyService
from tenantserve.tiers import Tier

DEFAULT_DRAIN_TIMEOUT_S = 60.0
# Replicas of a dedicated Ray pool: a model load per replica, maybe a node to add.
BRING_UP_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 10.0
DRAIN_POLL_S = 0.05


@dataclass
class MoveReport:
    """What a move did, step by step (seconds are wall-clock durations)."""

    tenant_id: str
    from_pool: str | None
    to_pool: str | None
    bring_up_s: float = 0.0
    # A dedicated Ray pool's replicas were brought up for the tenant.
    scaled_up: bool = False
    # The dedicated pool the tenant left, let go (scales to zero) as no tenant is left.
    released_pool: str | None = None
    # Ready adapters that run on the target from now on; `warmed_adapters` were loaded
    # into it already (vLLM), the others load on first use (Ray multiplexing).
    moved_adapters: list[str] = field(default_factory=list)
    warmed_adapters: list[str] = field(default_factory=list)
    # Ready adapters the target cannot load: their requests stay on the shared pool.
    adapters_not_moved: list[str] = field(default_factory=list)
    # The tenant's requests in this gateway's other pools when the switch happened.
    in_flight_at_switch: int = 0
    drain_s: float = 0.0
    drained: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"object": "tenant.move", **asdict(self)}


class TenantMover:
    """Moves tenants onto dedicated pools (and back) for `/admin/tenants/{id}/move`."""

    def __init__(
        self,
        pools: Sequence[Pool],
        tenancy: TenancyService,
        auth: Authenticator,
        auth_ttl_s: float,
        adapters: AdapterService | None = None,
        audit: AuditRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        resolver: ModelResolver | None = None,
    ) -> None:
        self.pools = {p.name: p for p in pools}
        self.resolver = resolver
        self.tenancy = tenancy
        self.auth = auth
        self.auth_ttl_s = auth_ttl_s
        self.adapters = adapters
        self.audit = audit if audit is not None else NullRecorder()
        self.clock = clock
        self._moving: set[str] = set()

    async def move(
        self,
        tenant_id: str,
        to_pool: str | None,
        actor: str,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    ) -> MoveReport:
        """Move the tenant to `to_pool` (None: back to the shared pools)."""
        if tenant_id in self._moving:
            raise ApiError(409, f"tenant {tenant_id} is being moved already", code="move_running")
        self._moving.add(tenant_id)
        try:
            return await self._move(tenant_id, to_pool, actor, drain_timeout_s)
        finally:
            self._moving.discard(tenant_id)

    async def _move(
        self, tenant_id: str, to_pool: str | None, actor: str, drain_timeout_s: float
    ) -> MoveReport:
        tenant = await self.tenancy.get_tenant(tenant_id)
        target = self._check(tenant, to_pool)
        report = MoveReport(tenant.id, tenant.pool, to_pool)
        if target is not None:
            started = self.clock()
            report.scaled_up = await _bring_up(target)
            report.bring_up_s = round(self.clock() - started, 3)
            await self._warm(tenant, target, report)
        old = [p for p in self.pools.values() if p is not target]
        report.in_flight_at_switch = sum(p.queue.tenant_load(tenant.id) for p in old)
        await self.tenancy.update_tenant(tenant.id, pool=to_pool)
        self.auth.invalidate_tenant(tenant.id)
        switched = self.clock()
        while True:
            left = sum(p.queue.tenant_load(tenant.id) for p in old)
            waited = self.clock() - switched
            if left == 0 and waited >= self.auth_ttl_s:
                break
            if waited >= drain_timeout_s:
                report.drained = False
                break
            await asyncio.sleep(DRAIN_POLL_S)
        report.drain_s = round(self.clock() - switched, 3)
        if tenant.pool is not None and tenant.pool != to_pool and report.drained:
            report.released_pool = await self._release(tenant.pool)
        await self.audit.record(actor, "tenant.move", tenant.id, report.to_json())
        return report

    async def hold_placed_pools(self) -> None:
        """At start-up: bring up the dedicated pools tenants are placed on (a restarted
        gateway, or one that joined after the move)."""
        dedicated = {
            n: p for n, p in self.pools.items() if isinstance(p, EnginePool) and p.dedicated
        }
        if not dedicated:  # nothing to bring up: no tenant list read at start-up
            return
        placed = await self.tenancy.placed_pools()
        for name, pool in dedicated.items():
            if name in placed:
                await pool.hold_capacity(True, BRING_UP_TIMEOUT_S)

    async def _release(self, name: str) -> str | None:
        """Let the dedicated pool `name` scale to zero unless a tenant is still placed
        on it; its name when it was let go."""
        pool = self.pools.get(name)
        if not isinstance(pool, EnginePool):
            return None
        if name in await self.tenancy.placed_pools():
            return None
        return name if await pool.hold_capacity(False, BRING_UP_TIMEOUT_S) else None

    def _check(self, tenant: Tenant, to_pool: str | None) -> Pool | None:
        if to_pool is None:
            return None
        pool = self.pools.get(to_pool)
        if pool is None:
            names = ", ".join(sorted(self.pools))
            raise ApiError(
                404, f"No pool `{to_pool}` (pools: {names}).", code="pool_not_found", param="pool"
            )
        if not (pool.dedicated or tenant.id in pool.reserved_for):
            raise ApiError(
                400,
                f"Pool `{to_pool}` is shared; a tenant moves to a pool declared "
                "`dedicated = true` (or reserved for it).",
                param="pool",
            )
        if pool.region is not tenant.region:
            raise ApiError(
                400,
                f"Pool `{to_pool}` is in region {pool.region.value}; the tenant's data stays "
                f"in {tenant.region.value}.",
                code="region_mismatch",
                param="pool",
            )
        if tenant.tier is not Tier.PREMIUM:
            raise ApiError(
                400,
                f"Dedicated pools serve premium tenants; the tenant is {tenant.tier.value}. "
                "Change its tier first.",
                code="tier_not_premium",
                param="pool",
            )
        return pool

    async def _warm(self, tenant: Tenant, pool: Pool, report: MoveReport) -> None:
        if self.adapters is None:
            return
        ctx = TenantContext(tenant_id=tenant.id, tier=tenant.tier, region=tenant.region)
        for adapter in await self.adapters.list(ctx):
            if not adapter.is_routable:
                continue
            base = self.resolver.pool_of(adapter.base_model) if self.resolver else None
            if not runs_version(pool, adapter.base_model, base):
                report.adapters_not_moved.append(adapter.name)
                continue
            report.moved_adapters.append(adapter.name)
            if isinstance(pool, VllmPool) and pool.adapters is not None:
                lora = LoraRef(adapter.id, str(await self.adapters.local_dir(adapter)))
                pool.adapters.release(await pool.adapters.acquire(lora))
                report.warmed_adapters.append(adapter.name)


async def _bring_up(pool: Pool) -> bool:
    """Scale a dedicated Ray pool up; raise a 503 unless the pool's backend answers.
    True when replicas were brought up."""
    try:
        if isinstance(pool, EnginePool):
            scaled = await pool.hold_capacity(True, BRING_UP_TIMEOUT_S)
            stats = getattr(pool.engine, "stats", None)
            if stats is not None:
                await asyncio.wait_for(stats(), PROBE_TIMEOUT_S)
            return scaled
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
            r = await client.get(f"{pool.upstream.base_url}/models")
        if r.status_code >= 500:
            raise RuntimeError(f"GET /models answered {r.status_code}")
        return False
    except Exception as e:
        raise ApiError(
            503,
            f"Pool `{pool.name}` does not answer ({e}); the tenant stays where it is.",
            "server_error",
            code="pool_unavailable",
        ) from e
