"""The `QuotaLedger` interface: what a tenant has used this UTC day and month.

Quotas are checked before a request runs (`usage`) and charged after it completes
(`record`), with the true token counts. Every record counts towards both the current
day and the current month, whatever quotas the tenant has now, so a quota added
mid-period sees the period's usage so far.

Two implementations, like the rate limiter's: `LocalQuotaLedger` (in-process, the
embedded default) and `RedisQuotaLedger` (shared by every gateway process). Issue 5's
metering store becomes a third: usage read from the metered events themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tenantserve.admission.quotas import Quota, QuotaMetric, QuotaPeriod, QuotaUsage, UsageKey


@dataclass(frozen=True)
class PeriodCounters:
    """One tenant's counts in one period; `tokens` is derived, never stored."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def get(self, metric: QuotaMetric) -> int:
        """The count of `metric` (tokens: prompt + completion)."""
        if metric is QuotaMetric.REQUESTS:
            return self.requests
        if metric is QuotaMetric.PROMPT_TOKENS:
            return self.prompt_tokens
        if metric is QuotaMetric.COMPLETION_TOKENS:
            return self.completion_tokens
        return self.prompt_tokens + self.completion_tokens


def usage_for(
    quotas: Sequence[Quota], counters: dict[QuotaPeriod, PeriodCounters]
) -> dict[UsageKey, int]:
    """The `(period, metric) -> used` entries the quotas name, from per-period counters
    (a period missing from `counters` is zero)."""
    out: dict[UsageKey, int] = {}
    for q in quotas:
        out[q.usage_key] = counters.get(q.period, PeriodCounters()).get(q.metric)
    return out


class QuotaLedger(Protocol):
    """Per-tenant usage per UTC day and month: read before a request, charged after it."""

    async def usage(self, tenant_id: str, quotas: Sequence[Quota], now: datetime) -> QuotaUsage:
        """What the tenant used in the periods containing `now`, for every (period,
        metric) the quotas name; never raises (a store failure reads as zero used)."""
        ...

    async def record(
        self,
        tenant_id: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        now: datetime,
        requests: int = 1,
    ) -> None:
        """Add a completed request's counts to the day and month containing `now`; never
        raises (a store failure loses this record and is logged)."""
        ...

    async def close(self) -> None:
        """Release the ledger's connections; it must not be used afterwards."""
        ...


def check_counts(requests: int, prompt_tokens: int, completion_tokens: int) -> None:
    """ValueError for a negative count (a caller's bug, not a store failure)."""
    if min(requests, prompt_tokens, completion_tokens) < 0:
        raise ValueError(
            "quota counts must be >= 0, not "
            f"requests={requests}, prompt_tokens={prompt_tokens}, "
            f"completion_tokens={completion_tokens}"
        )
