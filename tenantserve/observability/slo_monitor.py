"""`SloMonitor`: the per-tenant SLOs of `slo.py` computed from the request records.

    report(tenant)     the SLO status of one tenant (or all), with its TTFT p50 / p95 over
                       the last hour and day
                       (`GET /v1/slo`, `GET /admin/slo`)
    tick()             every tenant's status; a burn-rate alert that starts is appended
                       to the operator event log as `slo_burn_rate` (once per episode),
                       one that stops as `slo_burn_rate_resolved`
    related_events()   the operator events about a tenant (noisy neighbour, quotas, SLO)

Each evaluation is one aggregate query per window (5 min … 30 days) over all tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tenantserve.gateway.events import EventLog, OperatorEvent
from tenantserve.gateway.noisy_neighbors import NOISY_NEIGHBOR
from tenantserve.observability.record_store import RequestRecordStore
from tenantserve.observability.slo import (
    DAY_S,
    DEFAULT_RULES,
    DEFAULT_TARGETS,
    HOUR_1,
    MAX_TTFT_SAMPLES,
    SLIS,
    AlertEpisodes,
    BurnRule,
    SliCounts,
    SloTarget,
    TenantSlo,
    TtftQuantiles,
    evaluate,
    windows_of,
)
from tenantserve.tiers import Tier

logger = logging.getLogger(__name__)

SLO_BURN_RATE = "slo_burn_rate"
SLO_BURN_RATE_RESOLVED = "slo_burn_rate_resolved"
# Events about other tenants that a tenant may see (without their id) beside its SLO.
SHARED_KINDS = frozenset({NOISY_NEIGHBOR})


class SloMonitor:
    """Evaluates SLOs from the records; alerts go to the operator event log."""

    def __init__(
        self,
        store: RequestRecordStore,
        events: EventLog,
        every_s: float = 30.0,
        targets: Mapping[Tier, SloTarget] = DEFAULT_TARGETS,
        rules: Sequence[BurnRule] = DEFAULT_RULES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.events = events
        self.every_s = every_s
        self.targets = targets
        self.rules = rules
        self.clock = clock
        self.episodes = AlertEpisodes()
        self._task: asyncio.Task[None] | None = None
        self._slow_ms = {
            tier.value: t.ttft_p95_s * 1000 for tier, t in targets.items() if t.ttft_p95_s
        }

    async def evaluate(
        self, tenant_id: str | None = None, quantiles: bool = False
    ) -> list[TenantSlo]:
        """The SLO status of `tenant_id` (None: every tenant with records in 30 days)."""
        now = self.clock()
        counts: dict[str, dict[str, dict[str, SliCounts]]] = {}
        tiers: dict[str, str] = {}
        for window in windows_of(self.rules):  # longest first: the newest tier wins
            since = datetime.fromtimestamp(now - window.seconds, UTC)
            for row in await self.store.window_counts(since, self._slow_ms, tenant_id):
                per_sli = counts.setdefault(row.tenant_id, {sli: {} for sli in SLIS})
                tiers[row.tenant_id] = row.tier
                avail = per_sli["availability"]
                avail[window.name] = avail.get(window.name, SliCounts()) + SliCounts(
                    row.eligible, row.failed
                )
                ttft = per_sli["ttft"]
                ttft[window.name] = ttft.get(window.name, SliCounts()) + SliCounts(
                    row.timed, row.slow
                )
        out = []
        for tenant, per_sli in sorted(counts.items()):
            ttft_ms = await self._ttft_quantiles(tenant, now) if quantiles else None
            tier = Tier(tiers[tenant])
            out.append(evaluate(tenant, tier, per_sli, self.targets, self.rules, ttft_ms))
        return out

    async def _ttft_quantiles(self, tenant_id: str, now: float) -> TtftQuantiles:
        """The tenant's TTFT p50/p95 over the last hour and the last day."""
        hour = datetime.fromtimestamp(now - HOUR_1.seconds, UTC)
        day = datetime.fromtimestamp(now - DAY_S, UTC)
        # One read: the hour's newest samples are the day's newest ones.
        last_day = await self.store.ttft_samples(tenant_id, day, MAX_TTFT_SAMPLES)
        last_hour = [ttft for at, ttft in last_day if at >= hour]
        return TtftQuantiles.of(last_hour, [ttft for _, ttft in last_day])

    async def report(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """JSON of `evaluate` with the TTFT percentiles and each tenant's related events."""
        out = []
        for slo in await self.evaluate(tenant_id, quantiles=True):
            body = slo.to_json()
            body["events"] = self.related_events(slo.tenant_id, redact_others=False)
            out.append(body)
        return out

    async def tick(self) -> list[OperatorEvent]:
        """Evaluate every tenant; append an event per alert episode that started or ended."""
        slos = await self.evaluate()
        started, resolved = self.episodes.update(a for s in slos for a in s.alerts)
        appended = []
        for alert in started:
            details = {
                "sli": alert.sli,
                "rule": alert.rule,
                "threshold": alert.threshold,
                "long_burn_rate": round(alert.long_burn_rate, 2),
                "short_burn_rate": round(alert.short_burn_rate, 2),
            }
            appended.append(self.events.append(SLO_BURN_RATE, alert.tenant_id, details))
        for alert in resolved:
            details = {"sli": alert.sli, "rule": alert.rule}
            appended.append(self.events.append(SLO_BURN_RATE_RESOLVED, alert.tenant_id, details))
        return appended

    def related_events(
        self, tenant_id: str, since_s: float | None = None, redact_others: bool = True
    ) -> list[dict[str, Any]]:
        """Operator events about the tenant, and noisy-neighbour events of other tenants
        (their id removed when `redact_others`), oldest first, since `since_s` (Unix)."""
        out = []
        for event in self.events.events():
            if since_s is not None and event.created_at_s < since_s:
                continue
            if event.tenant_id == tenant_id:
                out.append(event.to_json())
            elif event.kind in SHARED_KINDS:
                body = event.to_json()
                if redact_others:
                    body["tenant_id"] = None
                    body["details"] = {**body["details"], "other_tenant": True}
                out.append(body)
        return out

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.tick()
            except Exception:
                logger.exception("SLO evaluation failed")
