"""In-process quota ledger: the embedded default, exact within one process.

Usage is counted per process, so N gateway processes each see about 1/N of a tenant's
usage and together let it use up to N times its quotas; use the Redis ledger for more
than one. Counts are lost when the process exits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tenantserve.admission.quota_ledger import PeriodCounters, check_counts, usage_for
from tenantserve.admission.quotas import Quota, QuotaPeriod, QuotaUsage, period_key


class LocalQuotaLedger:
    """Counters in a dict, one per tenant and period; a new period replaces the old one's
    counters, so memory stays at two entries per tenant. One event loop, no locking."""

    def __init__(self) -> None:
        # (tenant id, period) -> (period key, its counters)
        self._counters: dict[tuple[str, QuotaPeriod], tuple[str, PeriodCounters]] = {}

    async def usage(self, tenant_id: str, quotas: Sequence[Quota], now: datetime) -> QuotaUsage:
        """What the tenant used in the periods containing `now`, for every (period,
        metric) the quotas name."""
        counters = {period: self._current(tenant_id, period, now) for period in QuotaPeriod}
        return usage_for(quotas, counters)

    async def record(
        self,
        tenant_id: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        now: datetime,
        requests: int = 1,
    ) -> None:
        """Add a completed request's counts to the day and month containing `now`."""
        check_counts(requests, prompt_tokens, completion_tokens)
        for period in QuotaPeriod:
            key = period_key(period, now)
            entry = self._counters.get((tenant_id, period))
            if entry is not None and entry[0] > key:
                continue  # a late record for a period already over: it no longer counts
            c = self._current(tenant_id, period, now)
            self._counters[(tenant_id, period)] = (
                key,
                PeriodCounters(
                    requests=c.requests + requests,
                    prompt_tokens=c.prompt_tokens + prompt_tokens,
                    completion_tokens=c.completion_tokens + completion_tokens,
                ),
            )

    async def close(self) -> None:
        """Forget all counts."""
        self._counters.clear()

    def _current(self, tenant_id: str, period: QuotaPeriod, now: datetime) -> PeriodCounters:
        """The counters of the period containing `now`; an older period's are dropped."""
        entry = self._counters.get((tenant_id, period))
        if entry is None:
            return PeriodCounters()
        key, counters = entry
        if key == period_key(period, now):
            return counters
        if key < period_key(period, now):  # the period is over: forget it
            del self._counters[(tenant_id, period)]
        return PeriodCounters()
