"""LocalRateLimiter on a fake clock: GCRA arithmetic, reserve-then-commit, concurrency cap."""

from __future__ import annotations

import pytest

from tenantserve.admission import (
    TIER_DEFAULT_LIMITS,
    Admit,
    LimiterPolicy,
    LocalRateLimiter,
    RateLimits,
    Reject,
    Reservation,
    create_rate_limiter,
)
from tenantserve.config import Settings
from tenantserve.errors import ConfigError
from tenantserve.tiers import Tier

BIG = 10**9


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> LocalRateLimiter:
    return LocalRateLimiter(LimiterPolicy(slot_ttl_s=30.0), clock=clock)


def limits(rpm: int = BIG, tpm: int = BIG, concurrent: int = BIG) -> RateLimits:
    return RateLimits(requests_per_minute=rpm, tokens_per_minute=tpm, max_concurrent=concurrent)


_ids = iter(range(1 << 62))


async def reserve(
    limiter: LocalRateLimiter, lim: RateLimits, tokens: int = 0, tenant: str = "t1"
) -> Admit | Reject:
    return await limiter.reserve(tenant, Tier.STANDARD, lim, tokens, f"req-{next(_ids)}")


async def admitted(limiter: LocalRateLimiter, lim: RateLimits, tokens: int = 0) -> Reservation:
    result = await reserve(limiter, lim, tokens)
    assert isinstance(result, Admit), result
    return result.reservation


async def test_burst_up_to_the_rpm_limit_then_reject_with_one_interval_retry_after(
    limiter: LocalRateLimiter, clock: FakeClock
) -> None:
    lim = limits(rpm=20)
    for _ in range(20):
        await admitted(limiter, lim)
    rejected = await reserve(limiter, lim)
    assert rejected == Reject("requests_per_minute", pytest.approx(3.0))
    clock.advance(2.9)
    assert isinstance(await reserve(limiter, lim), Reject)
    clock.advance(0.1)
    await admitted(limiter, lim)
    assert isinstance(await reserve(limiter, lim), Reject)


async def test_steady_rate_at_the_limit_is_always_admitted(
    limiter: LocalRateLimiter, clock: FakeClock
) -> None:
    lim = limits(rpm=300)  # one request per 0.2 s
    for _ in range(300):  # the burst first, then the sustained rate
        await admitted(limiter, lim)
    for _ in range(1000):
        clock.advance(0.2)
        await admitted(limiter, lim)
        assert isinstance(await reserve(limiter, lim), Reject)


async def test_token_reservation_of_prompt_plus_max_tokens_blocks_concurrent_overshoot(
    limiter: LocalRateLimiter,
) -> None:
    lim = limits(tpm=1000)
    first = await admitted(limiter, lim, tokens=600)
    # The first request will only use 100 tokens, but until it commits all 600 are held.
    assert await reserve(limiter, lim, tokens=600) == Reject(
        "tokens_per_minute", pytest.approx(12.0)
    )
    await limiter.commit(first, actual_tokens=100)
    await admitted(limiter, lim, tokens=600)
    assert isinstance(await reserve(limiter, lim, tokens=301), Reject)
    await admitted(limiter, lim, tokens=300)


async def test_refund_never_moves_the_tat_below_now(
    limiter: LocalRateLimiter, clock: FakeClock
) -> None:
    lim = limits(tpm=1000)
    held = await admitted(limiter, lim, tokens=500)
    clock.advance(60)
    await limiter.commit(held, actual_tokens=0)
    await admitted(limiter, lim, tokens=1000)  # a full burst, no more
    assert isinstance(await reserve(limiter, lim, tokens=1), Reject)


async def test_tokens_used_beyond_the_reservation_are_charged_at_commit(
    limiter: LocalRateLimiter,
) -> None:
    lim = limits(tpm=1000)
    held = await admitted(limiter, lim, tokens=100)
    await limiter.commit(held, actual_tokens=400)
    assert isinstance(await reserve(limiter, lim, tokens=601), Reject)
    await admitted(limiter, lim, tokens=600)


async def test_request_larger_than_the_token_budget_is_rejected_without_taking_anything(
    limiter: LocalRateLimiter,
) -> None:
    lim = limits(rpm=1, tpm=1000)
    assert await reserve(limiter, lim, tokens=1001) == Reject("tokens_per_minute", 60.0)
    await admitted(limiter, lim, tokens=1000)


async def test_concurrency_cap_rejects_until_a_slot_is_committed(
    limiter: LocalRateLimiter,
) -> None:
    lim = limits(concurrent=2)
    a = await admitted(limiter, lim)
    await admitted(limiter, lim)
    assert await reserve(limiter, lim) == Reject("concurrency", 1.0)
    await limiter.commit(a, actual_tokens=0)
    await admitted(limiter, lim)
    assert isinstance(await reserve(limiter, lim), Reject)


async def test_commit_is_idempotent_per_request_id(limiter: LocalRateLimiter) -> None:
    lim = limits(tpm=1000, concurrent=2)
    a = await admitted(limiter, lim, tokens=400)
    await admitted(limiter, lim, tokens=400)
    await limiter.commit(a, actual_tokens=0)
    await limiter.commit(a, actual_tokens=0)  # no second refund, no second slot
    assert isinstance(await reserve(limiter, lim, tokens=601), Reject)
    await admitted(limiter, lim, tokens=600)
    assert await reserve(limiter, lim) == Reject("concurrency", 1.0)


async def test_a_token_reject_consumes_neither_requests_nor_a_slot(
    limiter: LocalRateLimiter,
) -> None:
    lim = limits(rpm=2, tpm=100, concurrent=2)
    await admitted(limiter, lim, tokens=80)
    for _ in range(5):
        assert isinstance(await reserve(limiter, lim, tokens=80), Reject)
    await admitted(limiter, lim, tokens=20)  # the second request and slot were still free
    assert await reserve(limiter, lim) == Reject("requests_per_minute", pytest.approx(30.0))


async def test_a_concurrency_reject_consumes_no_rate_budget(limiter: LocalRateLimiter) -> None:
    lim = limits(rpm=2, tpm=100, concurrent=1)
    held = await admitted(limiter, lim, tokens=50)
    for _ in range(5):
        assert await reserve(limiter, lim, tokens=50) == Reject("concurrency", 1.0)
    await limiter.commit(held, actual_tokens=50)
    await admitted(limiter, lim, tokens=50)


async def test_reject_names_the_first_failed_limit_and_waits_for_all(
    limiter: LocalRateLimiter,
) -> None:
    lim = limits(rpm=60, tpm=60, concurrent=1)
    await admitted(limiter, lim, tokens=30)
    # rpm waits -59 s (passes), tpm 30 s, concurrency 1 s.
    assert await reserve(limiter, lim, tokens=60) == Reject(
        "tokens_per_minute", pytest.approx(30.0)
    )


async def test_reserving_an_in_flight_request_id_again_takes_nothing_more(
    limiter: LocalRateLimiter,
) -> None:
    lim = limits(rpm=2, tpm=100, concurrent=2)
    first = await limiter.reserve("t1", Tier.FREE, lim, 60, "same")
    again = await limiter.reserve("t1", Tier.FREE, lim, 60, "same")
    assert isinstance(first, Admit) and again == first
    await admitted(limiter, lim, tokens=40)


async def test_slot_of_a_holder_that_never_commits_expires_after_slot_ttl(
    limiter: LocalRateLimiter, clock: FakeClock
) -> None:
    lim = limits(concurrent=1)
    await admitted(limiter, lim)
    clock.advance(29.9)
    assert isinstance(await reserve(limiter, lim), Reject)
    clock.advance(0.1)
    await admitted(limiter, lim)


async def test_tenants_do_not_share_limits(limiter: LocalRateLimiter) -> None:
    lim = limits(rpm=1)
    assert isinstance(await reserve(limiter, lim, tenant="a"), Admit)
    assert isinstance(await reserve(limiter, lim, tenant="a"), Reject)
    assert isinstance(await reserve(limiter, lim, tenant="b"), Admit)


def test_tier_defaults_are_data_and_premium_alone_fails_open() -> None:
    assert TIER_DEFAULT_LIMITS[Tier.FREE] == RateLimits(20, 20_000, 2)
    assert RateLimits.for_tier(Tier.STANDARD) == RateLimits(300, 200_000, 16)
    assert RateLimits.for_tier(Tier.PREMIUM) == RateLimits(3_000, 2_000_000, 64)
    policy = LimiterPolicy()
    assert [policy.fails_open(t) for t in Tier] == [False, False, True]
    assert LimiterPolicy(fail_open={Tier.FREE: True}).fails_open(Tier.FREE)
    with pytest.raises(ConfigError):
        RateLimits(0, 1, 1)


def test_redis_url_setting_selects_the_backend() -> None:
    assert Settings.from_env({}).redis_url is None
    assert isinstance(create_rate_limiter(Settings.from_env({}).redis_url), LocalRateLimiter)
    env = {"TENANTSERVE_REDIS_URL": "redis://cache:6379/0"}
    assert Settings.from_env(env).redis_url == "redis://cache:6379/0"
