"""How the Redis limiter tells a slow call from an outage (no Redis needed: a stub client)."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tenantserve.admission.limiter import Reject
from tenantserve.admission.limiter_redis import MAX_CONSECUTIVE_TIMEOUTS, RedisRateLimiter
from tenantserve.admission.limits import LimiterPolicy, RateLimits
from tenantserve.tiers import Tier

LIMITS = RateLimits(requests_per_minute=100, tokens_per_minute=100_000, max_concurrent=10)


class FailingClient:
    """Every script call raises `error`; counts the calls that reached 'Redis'."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def register_script(self, lua: str) -> Any:
        async def script(**_: Any) -> Any:
            self.calls += 1
            raise self.error

        return script


async def reserve(limiter: RedisRateLimiter, i: int) -> object:
    return await limiter.reserve("t", Tier.STANDARD, LIMITS, 10, f"r{i}")


async def test_one_slow_call_fails_only_itself_not_the_next_requests() -> None:
    client = FailingClient(RedisTimeoutError("slow"))
    limiter = RedisRateLimiter(client, LimiterPolicy())  # type: ignore[arg-type]
    first = await reserve(limiter, 0)
    assert isinstance(first, Reject) and first.reason == "limiter_unavailable"
    await reserve(limiter, 1)
    assert client.calls == 2  # the second request still asked Redis


async def test_consecutive_timeouts_count_as_an_outage() -> None:
    client = FailingClient(RedisTimeoutError("slow"))
    limiter = RedisRateLimiter(client, LimiterPolicy())  # type: ignore[arg-type]
    for i in range(MAX_CONSECUTIVE_TIMEOUTS + 2):
        await reserve(limiter, i)
    assert client.calls == MAX_CONSECUTIVE_TIMEOUTS  # then the outage window skips Redis


async def test_refused_connection_is_an_outage_at_once() -> None:
    client = FailingClient(RedisConnectionError("refused"))
    limiter = RedisRateLimiter(client, LimiterPolicy())  # type: ignore[arg-type]
    await reserve(limiter, 0)
    await reserve(limiter, 1)
    assert client.calls == 1
