"""`MeteredQuotaLedger`: quota usage read from the metered usage itself (the third
`QuotaLedger`; the default of `tenantserve up`).

    usage()    the tenant's hour buckets since the UTC day / month start (the usage
               store: exactly-once, shared by every gateway through the database),
               cached per tenant for `ttl_s`, plus what this process charged since
               that snapshot was read
    record()   remembers the charge until the next snapshot (the usage event itself
               was written to the outbox when the request closed)

Usage reaches the store within the pipeline's lag (well under a second embedded), so a
snapshot misses at most the last `ttl_s` + lag of other processes' traffic: hard quotas
hold to within that, like any eventually-consistent counter, and never double count.
Store failures read as the snapshot in hand (or zero): quotas fail open, admission
never fails on them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tenantserve.admission.quota_ledger import PeriodCounters, check_counts, usage_for
from tenantserve.admission.quotas import Quota, QuotaPeriod, QuotaUsage
from tenantserve.metering.report import Counters, Granularity, truncate
from tenantserve.metering.store import UsageStore

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 1.0


@dataclass
class _Snapshot:
    day_start: datetime
    month_start: datetime
    day: Counters
    month: Counters
    read_at: float  # monotonic, when the read began
    # (monotonic time, requests, prompt, completion) charged here after `read_at`.
    local: list[tuple[float, int, int, int]] = field(default_factory=list)


class MeteredQuotaLedger:
    def __init__(self, store: UsageStore, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._snapshots: dict[str, _Snapshot] = {}
        self._refreshing: dict[str, asyncio.Task[_Snapshot | None]] = {}

    async def usage(self, tenant_id: str, quotas: Sequence[Quota], now: datetime) -> QuotaUsage:
        snapshot = await self._snapshot(tenant_id, now)
        if snapshot is None:
            return usage_for(quotas, {})
        local = [0, 0, 0]
        for _, requests, prompt, completion in snapshot.local:
            local[0] += requests
            local[1] += prompt
            local[2] += completion

        def counters(c: Counters) -> PeriodCounters:
            return PeriodCounters(
                c.requests + local[0], c.input_tokens + local[1], c.output_tokens + local[2]
            )

        return usage_for(
            quotas,
            {QuotaPeriod.DAY: counters(snapshot.day), QuotaPeriod.MONTH: counters(snapshot.month)},
        )

    async def record(
        self,
        tenant_id: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        now: datetime,
        requests: int = 1,
    ) -> None:
        check_counts(requests, prompt_tokens, completion_tokens)
        snapshot = self._snapshots.get(tenant_id)
        if snapshot is not None:
            snapshot.local.append((time.monotonic(), requests, prompt_tokens, completion_tokens))

    async def close(self) -> None:
        for task in self._refreshing.values():
            task.cancel()
        self._refreshing.clear()

    async def _snapshot(self, tenant_id: str, now: datetime) -> _Snapshot | None:
        current = self._snapshots.get(tenant_id)
        fresh = (
            current is not None
            and time.monotonic() - current.read_at < self.ttl_s
            and current.day_start == truncate(now, Granularity.DAY)
        )
        if fresh:
            return current
        task = self._refreshing.get(tenant_id)
        if task is None:  # one read per tenant at a time, shared by concurrent requests
            task = asyncio.ensure_future(self._read(tenant_id, now))
            self._refreshing[tenant_id] = task
            task.add_done_callback(lambda _: self._refreshing.pop(tenant_id, None))
        return await asyncio.shield(task)

    async def _read(self, tenant_id: str, now: datetime) -> _Snapshot | None:
        started = time.monotonic()
        day_start = truncate(now.astimezone(UTC), Granularity.DAY)
        month_start = truncate(day_start, Granularity.MONTH)
        try:
            month = await self.store.totals(tenant_id, month_start)
            day = await self.store.totals(tenant_id, day_start)
        except Exception:
            logger.exception("quota usage of %s could not be read; failing open", tenant_id)
            return self._snapshots.get(tenant_id)
        previous = self._snapshots.get(tenant_id)
        local = [c for c in previous.local if c[0] >= started] if previous else []
        snapshot = _Snapshot(day_start, month_start, day, month, started, local)
        self._snapshots[tenant_id] = snapshot
        return snapshot
