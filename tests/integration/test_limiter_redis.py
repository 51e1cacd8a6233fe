"""RedisRateLimiter against a real Redis: the local limiter's behaviours, plus what only a
shared store has to prove (two processes, outages, slots of a crashed holder)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import socket
import time
import uuid
from collections.abc import AsyncIterator
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tenantserve.admission import (
    Admit,
    LimiterPolicy,
    RateLimits,
    RedisRateLimiter,
    Reject,
    Reservation,
    create_rate_limiter,
)
from tenantserve.tiers import Tier
from tests.helpers.services import REDIS_URL, require_service

BIG = 10**9
SLOT_TTL_S = 0.3


@pytest.fixture
def redis_url() -> str:
    parts = urlsplit(REDIS_URL)
    require_service("Redis", parts.hostname or "127.0.0.1", parts.port or 6379)
    return REDIS_URL


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"ts:rl:test:{uuid.uuid4().hex}"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def limiter(redis_url: str, prefix: str) -> AsyncIterator[RedisRateLimiter]:
    limiter = RedisRateLimiter.from_url(
        redis_url, LimiterPolicy(slot_ttl_s=SLOT_TTL_S * 100), key_prefix=prefix
    )
    yield limiter
    await limiter.close()


def limits(rpm: int = BIG, tpm: int = BIG, concurrent: int = BIG) -> RateLimits:
    return RateLimits(requests_per_minute=rpm, tokens_per_minute=tpm, max_concurrent=concurrent)


async def reserve(
    limiter: RedisRateLimiter, lim: RateLimits, tokens: int = 0, tier: Tier = Tier.STANDARD
) -> Admit | Reject:
    return await limiter.reserve("t1", tier, lim, tokens, uuid.uuid4().hex)


async def admitted(limiter: RedisRateLimiter, lim: RateLimits, tokens: int = 0) -> Reservation:
    result = await reserve(limiter, lim, tokens)
    assert isinstance(result, Admit), result
    return result.reservation


async def test_burst_up_to_the_rpm_limit_then_reject_with_one_interval_retry_after(
    limiter: RedisRateLimiter,
) -> None:
    lim = limits(rpm=20)  # one request per 3 s
    for _ in range(20):
        await admitted(limiter, lim)
    rejected = await reserve(limiter, lim)
    assert isinstance(rejected, Reject) and rejected.reason == "requests_per_minute"
    assert rejected.retry_after_s == pytest.approx(3.0, abs=0.1)


async def test_rejected_request_is_admitted_after_retry_after(limiter: RedisRateLimiter) -> None:
    lim = limits(rpm=1200)  # one request per 0.05 s
    start_s = time.monotonic()
    num_admitted = 0
    while isinstance(result := await reserve(limiter, lim), Admit):
        num_admitted += 1
    refilled = (time.monotonic() - start_s) / 0.05
    assert 1200 <= num_admitted <= 1200 + refilled + 1
    assert isinstance(result, Reject) and 0.0 < result.retry_after_s <= 0.05
    await asyncio.sleep(result.retry_after_s + 0.002)
    await admitted(limiter, lim)


async def test_token_reservation_blocks_overshoot_and_commit_refunds_the_rest(
    limiter: RedisRateLimiter,
) -> None:
    lim = limits(tpm=1000)
    first = await admitted(limiter, lim, tokens=600)
    rejected = await reserve(limiter, lim, tokens=600)
    assert isinstance(rejected, Reject) and rejected.reason == "tokens_per_minute"
    assert rejected.retry_after_s == pytest.approx(12.0, abs=0.1)
    await limiter.commit(first, actual_tokens=100)
    await admitted(limiter, lim, tokens=600)
    assert isinstance(await reserve(limiter, lim, tokens=310), Reject)


async def test_concurrency_cap_rejects_until_a_slot_is_committed(
    limiter: RedisRateLimiter,
) -> None:
    lim = limits(concurrent=2)
    a = await admitted(limiter, lim)
    await admitted(limiter, lim)
    assert await reserve(limiter, lim) == Reject("concurrency", 1.0)
    await limiter.commit(a, actual_tokens=0)
    await admitted(limiter, lim)
    assert isinstance(await reserve(limiter, lim), Reject)


async def test_commit_is_idempotent_per_request_id(limiter: RedisRateLimiter) -> None:
    lim = limits(tpm=1000, concurrent=2)
    a = await admitted(limiter, lim, tokens=400)
    await admitted(limiter, lim, tokens=400)
    await limiter.commit(a, actual_tokens=0)
    await limiter.commit(a, actual_tokens=0)
    assert isinstance(await reserve(limiter, lim, tokens=610), Reject)
    await admitted(limiter, lim, tokens=590)
    assert await reserve(limiter, lim) == Reject("concurrency", 1.0)


async def test_a_token_reject_consumes_neither_requests_nor_a_slot(
    limiter: RedisRateLimiter,
) -> None:
    lim = limits(rpm=2, tpm=100, concurrent=2)
    await admitted(limiter, lim, tokens=80)
    for _ in range(5):
        rejected = await reserve(limiter, lim, tokens=80)
        assert isinstance(rejected, Reject) and rejected.reason == "tokens_per_minute"
    await admitted(limiter, lim, tokens=19)
    rejected = await reserve(limiter, lim)
    assert isinstance(rejected, Reject) and rejected.reason == "requests_per_minute"


async def test_reserving_an_in_flight_request_id_again_takes_nothing_more(
    limiter: RedisRateLimiter,
) -> None:
    lim = limits(rpm=2, tpm=100, concurrent=2)
    first = await limiter.reserve("t1", Tier.FREE, lim, 60, "same")
    again = await limiter.reserve("t1", Tier.FREE, lim, 60, "same")
    assert isinstance(first, Admit) and again == first
    await admitted(limiter, lim, tokens=39)


async def test_keys_are_namespaced_per_tenant_and_expire(
    limiter: RedisRateLimiter, redis_url: str, prefix: str
) -> None:
    await admitted(limiter, limits(rpm=600, tpm=6000), tokens=100)
    client = aioredis.Redis.from_url(redis_url)
    try:
        for key in limiter.keys("t1"):
            assert key.startswith(f"{prefix}:{{t1}}:")
            assert 0 < await client.pttl(key) <= 1000 * SLOT_TTL_S * 100
        assert await client.pttl(f"{prefix}:{{t1}}:rpm") <= 100
    finally:
        await client.aclose()


async def test_slot_of_a_crashed_holder_expires_after_slot_ttl(redis_url: str, prefix: str) -> None:
    lim = limits(concurrent=1)
    policy = LimiterPolicy(slot_ttl_s=SLOT_TTL_S)
    crashed = RedisRateLimiter.from_url(redis_url, policy, key_prefix=prefix)
    assert isinstance(await reserve(crashed, lim), Admit)
    await crashed.close()  # gone without committing

    survivor = RedisRateLimiter.from_url(redis_url, policy, key_prefix=prefix)
    try:
        assert await reserve(survivor, lim) == Reject("concurrency", 1.0)
        await asyncio.sleep(SLOT_TTL_S + 0.02)
        assert isinstance(await reserve(survivor, lim), Admit)
    finally:
        await survivor.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_unreachable_redis_fails_open_for_premium_and_closed_for_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = create_rate_limiter(closed_port_url())
    lim = limits(rpm=1, concurrent=1)
    caplog.set_level(logging.WARNING, logger="tenantserve.admission.limiter_redis")
    try:
        for _ in range(3):
            premium = await reserve(limiter, lim, tier=Tier.PREMIUM)  # type: ignore[arg-type]
            assert isinstance(premium, Admit) and premium.reservation.degraded
            await limiter.commit(premium.reservation, actual_tokens=0)
            for tier in (Tier.FREE, Tier.STANDARD):
                rejected = await reserve(limiter, lim, tier=tier)  # type: ignore[arg-type]
                assert rejected == Reject("limiter_unavailable", 1.0)
    finally:
        await limiter.close()
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


async def test_fail_policy_is_configurable_per_tier() -> None:
    policy = LimiterPolicy(fail_open={Tier.FREE: True, Tier.PREMIUM: False})
    limiter = RedisRateLimiter.from_url(closed_port_url(), policy)
    try:
        assert isinstance(await reserve(limiter, limits(), tier=Tier.FREE), Admit)
        assert isinstance(await reserve(limiter, limits(), tier=Tier.PREMIUM), Reject)
    finally:
        await limiter.close()


async def test_limiter_calls_redis_again_after_the_outage_window_and_recovers(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = LimiterPolicy(unavailable_retry_after_s=0.05)
    limiter = RedisRateLimiter.from_url(redis_url, policy, key_prefix=prefix)
    real_script = limiter._reserve
    calls = 0

    async def down_once(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisConnectionError("connection reset")
        return await real_script(**kwargs)

    monkeypatch.setattr(limiter, "_reserve", down_once)
    try:
        assert await reserve(limiter, limits()) == Reject("limiter_unavailable", 0.05)
        assert await reserve(limiter, limits()) == Reject("limiter_unavailable", 0.05)
        assert calls == 1  # inside the window Redis is not called
        await asyncio.sleep(0.06)
        assert isinstance(await reserve(limiter, limits()), Admit)
        assert isinstance(await reserve(limiter, limits()), Admit)
    finally:
        await limiter.close()


async def test_decision_waiting_too_long_for_a_connection_gets_the_policy_without_an_outage(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = LimiterPolicy(max_connections=1, store_timeout_s=0.05)
    limiter = RedisRateLimiter.from_url(redis_url, policy, key_prefix=prefix)
    real_script = limiter._reserve

    async def slow(**kwargs: Any) -> Any:
        await asyncio.sleep(0.1)
        return await real_script(**kwargs)

    monkeypatch.setattr(limiter, "_reserve", slow)
    try:
        slow_one, queued_free, queued_premium = await asyncio.gather(
            reserve(limiter, limits()),
            reserve(limiter, limits(), tier=Tier.FREE),
            reserve(limiter, limits(), tier=Tier.PREMIUM),
        )
        assert isinstance(slow_one, Admit) and not slow_one.reservation.degraded
        assert queued_free == Reject("limiter_unavailable", 1.0)
        assert isinstance(queued_premium, Admit) and queued_premium.reservation.degraded
        result = await reserve(limiter, limits())  # Redis was never marked down
        assert isinstance(result, Admit) and not result.reservation.degraded
    finally:
        await limiter.close()


# Two processes, one tenant: the binding limit holds across them. GCRA refills
# limit/60 per second, so over a run of E seconds the most it may admit is
# limit * (1 + E/60); the assertion allows exactly that and nothing more.
HAMMER_TASKS = 50
RPM_LIMIT = 500
TPM_LIMIT, TOKENS = 50_000, 100  # 500 requests' worth
CONCURRENT_LIMIT = 40


def _hammer_process(url: str, prefix: str, start_together: Barrier, out: Any) -> None:
    start_together.wait(timeout=30)  # both processes are imported and ready
    out.put(asyncio.run(_hammer(url, prefix)))


async def _hammer(url: str, prefix: str) -> dict[str, int | float]:
    """Three tenants at once, each bound by one limit; how many requests each got in."""
    limiter = RedisRateLimiter.from_url(url, key_prefix=prefix)
    start_s = time.time()
    rpm, tpm, concurrency = await asyncio.gather(
        _hammer_tenant(limiter, "rpm", limits(rpm=RPM_LIMIT), attempts=400, commit=True),
        _hammer_tenant(limiter, "tpm", limits(tpm=TPM_LIMIT), attempts=400, commit=True),
        _hammer_tenant(
            limiter, "concurrency", limits(concurrent=CONCURRENT_LIMIT), attempts=100, commit=False
        ),
    )
    end_s = time.time()
    await limiter.close()
    return {"rpm": rpm, "tpm": tpm, "concurrency": concurrency, "start_s": start_s, "end_s": end_s}


async def _hammer_tenant(
    limiter: RedisRateLimiter, tenant: str, lim: RateLimits, attempts: int, commit: bool
) -> int:
    num_admitted = 0
    todo = iter(range(attempts))

    async def worker() -> None:
        nonlocal num_admitted
        for _ in todo:
            result = await limiter.reserve(tenant, Tier.STANDARD, lim, TOKENS, uuid.uuid4().hex)
            if isinstance(result, Admit):
                num_admitted += 1
                if commit:
                    await limiter.commit(result.reservation, actual_tokens=TOKENS)

    await asyncio.gather(*(worker() for _ in range(HAMMER_TASKS)))
    return num_admitted


async def test_two_processes_sharing_redis_admit_no_more_than_the_limit(
    redis_url: str, prefix: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    start_together, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer_process, args=(redis_url, prefix, start_together, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [await asyncio.to_thread(out.get, True, 30) for _ in procs]
    for p in procs:
        await asyncio.to_thread(p.join, 10)
        assert p.exitcode == 0
    total = {k: sum(r[k] for r in results) for k in ("rpm", "tpm", "concurrency")}
    elapsed_s = max(r["end_s"] for r in results) - min(r["start_s"] for r in results)
    # Both took part, at the same time.
    assert all(r["rpm"] > 0 and r["tpm"] > 0 for r in results), results
    assert max(r["start_s"] for r in results) < min(r["end_s"] for r in results), results
    refill = 1 + elapsed_s / 60
    assert elapsed_s < 2.0, elapsed_s  # a slow run would hide overshoot in the refill
    assert RPM_LIMIT <= total["rpm"] <= RPM_LIMIT * refill, (total, elapsed_s)
    assert TPM_LIMIT // TOKENS <= total["tpm"] <= TPM_LIMIT // TOKENS * refill, (total, elapsed_s)
    assert total["concurrency"] == CONCURRENT_LIMIT, total


# Group commit: concurrent calls share pipelines; each decision is still its own.


async def test_concurrent_reserves_and_commits_in_batches_keep_the_concurrency_cap(
    limiter: RedisRateLimiter,
) -> None:
    lim = limits(concurrent=5)
    results = await asyncio.gather(*(reserve(limiter, lim) for _ in range(20)))
    held = [r.reservation for r in results if isinstance(r, Admit)]
    assert len(held) == 5
    assert all(r == Reject("concurrency", 1.0) for r in results if not isinstance(r, Admit))
    await asyncio.gather(*(limiter.commit(r, 0) for r in held))
    again = await asyncio.gather(*(reserve(limiter, lim) for _ in range(5)))
    assert all(isinstance(r, Admit) for r in again)


async def test_a_batch_after_redis_lost_its_scripts_loads_them_again(
    limiter: RedisRateLimiter, redis_url: str
) -> None:
    await limiter.commit(await admitted(limiter, limits()), 0)  # the scripts are loaded
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    results = await asyncio.gather(*(reserve(limiter, limits(concurrent=3)) for _ in range(4)))
    assert sum(isinstance(r, Admit) for r in results) == 3


async def test_a_reserve_cancelled_in_flight_gives_its_slot_back(
    limiter: RedisRateLimiter,
) -> None:
    lim = limits(concurrent=1)
    task = asyncio.create_task(reserve(limiter, lim))
    await asyncio.sleep(0)  # its pipeline is in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(2):
        while not isinstance(await reserve(limiter, lim), Admit):
            await asyncio.sleep(0.01)
