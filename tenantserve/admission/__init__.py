"""Admission: everything decided about a request before any model work.

limits.py          RateLimits (tier defaults as data), LimiterPolicy (fail open/closed)
limiter.py         RateLimiter interface; Admit / Reject / Reservation
limiter_local.py   LocalRateLimiter: in-process GCRA (embedded default)
limiter_redis.py   RedisRateLimiter: one Lua script per decision, shared by processes
"""

from __future__ import annotations

from tenantserve.admission.limiter import Admit, RateLimiter, Reject, RejectReason, Reservation
from tenantserve.admission.limiter_local import LocalRateLimiter
from tenantserve.admission.limiter_redis import RedisRateLimiter
from tenantserve.admission.limits import TIER_DEFAULT_LIMITS, LimiterPolicy, RateLimits

__all__ = [
    "TIER_DEFAULT_LIMITS",
    "Admit",
    "LimiterPolicy",
    "LocalRateLimiter",
    "RateLimiter",
    "RateLimits",
    "RedisRateLimiter",
    "Reject",
    "RejectReason",
    "Reservation",
    "create_rate_limiter",
]


def create_rate_limiter(redis_url: str | None, policy: LimiterPolicy | None = None) -> RateLimiter:
    """The Redis limiter when a URL is configured, else the in-process one (for bootstrap)."""
    if redis_url is None:
        return LocalRateLimiter(policy)
    return RedisRateLimiter.from_url(redis_url, policy)
