"""Admission: everything decided about a request before any model work.

limits.py                RateLimits (tier defaults as data), LimiterPolicy (fail open/closed)
limiter.py               RateLimiter interface; Admit / Reject / Reservation
limiter_local.py         LocalRateLimiter: in-process GCRA (embedded default)
limiter_redis.py         RedisRateLimiter: one Lua script per decision, shared by processes
quotas.py                Quota (metric, UTC day / month, limit, hard / soft), pure check_quotas
quota_ledger.py          QuotaLedger interface: usage per tenant and period, record after
quota_ledger_local.py    LocalQuotaLedger: in-process counters (embedded default)
quota_ledger_redis.py    RedisQuotaLedger: one hash per tenant and period, shared by processes
"""

from __future__ import annotations

from tenantserve.admission.limiter import Admit, RateLimiter, Reject, RejectReason, Reservation
from tenantserve.admission.limiter_local import LocalRateLimiter
from tenantserve.admission.limiter_redis import RedisRateLimiter
from tenantserve.admission.limits import TIER_DEFAULT_LIMITS, LimiterPolicy, RateLimits
from tenantserve.admission.quota_ledger import QuotaLedger
from tenantserve.admission.quota_ledger_local import LocalQuotaLedger
from tenantserve.admission.quota_ledger_redis import RedisQuotaLedger
from tenantserve.admission.quotas import (
    SOFT_FLOOR_TOKENS,
    Enforcement,
    Quota,
    QuotaAllowed,
    QuotaExceeded,
    QuotaMetric,
    QuotaPeriod,
    QuotaUsage,
    SoftAlertFilter,
    SoftQuotaAlert,
    check_quotas,
)

__all__ = [
    "SOFT_FLOOR_TOKENS",
    "TIER_DEFAULT_LIMITS",
    "Admit",
    "Enforcement",
    "LimiterPolicy",
    "LocalQuotaLedger",
    "LocalRateLimiter",
    "Quota",
    "QuotaAllowed",
    "QuotaExceeded",
    "QuotaLedger",
    "QuotaMetric",
    "QuotaPeriod",
    "QuotaUsage",
    "RateLimiter",
    "RateLimits",
    "RedisQuotaLedger",
    "RedisRateLimiter",
    "Reject",
    "RejectReason",
    "Reservation",
    "SoftAlertFilter",
    "SoftQuotaAlert",
    "check_quotas",
    "create_quota_ledger",
    "create_rate_limiter",
]


def create_rate_limiter(redis_url: str | None, policy: LimiterPolicy | None = None) -> RateLimiter:
    """The Redis limiter when a URL is configured, else the in-process one (for bootstrap)."""
    if redis_url is None:
        return LocalRateLimiter(policy)
    return RedisRateLimiter.from_url(redis_url, policy)


def create_quota_ledger(redis_url: str | None) -> QuotaLedger:
    """The Redis ledger when a URL is configured, else the in-process one (for bootstrap)."""
    if redis_url is None:
        return LocalQuotaLedger()
    return RedisQuotaLedger.from_url(redis_url)
