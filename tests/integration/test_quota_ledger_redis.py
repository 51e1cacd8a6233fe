"""RedisQuotaLedger against a real Redis: the local ledger's behaviours, plus what only a
shared store has to prove (concurrent records add up exactly, keys expire after their
period, an outage reads as unused instead of failing requests)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from tenantserve.admission import create_quota_ledger
from tenantserve.admission.quota_ledger_redis import KEY_GRACE_S, RedisQuotaLedger
from tenantserve.admission.quotas import (
    Enforcement,
    Quota,
    QuotaAllowed,
    QuotaExceeded,
    QuotaMetric,
    QuotaPeriod,
    check_quotas,
    period_end,
)
from tests.helpers.services import REDIS_URL, free_port, require_service

# The last hour of a month (the keys expire an hour after their period, by the Redis
# server's clock): the current month's, so they are still alive when the test reads them.
_THIS_MONTH = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
NOW = (_THIS_MONTH + timedelta(days=32)).replace(day=1) - timedelta(hours=1)
DAY, MONTH = QuotaPeriod.DAY, QuotaPeriod.MONTH
ALL_QUOTAS = [
    Quota(metric, period, 1, Enforcement.HARD) for metric in QuotaMetric for period in QuotaPeriod
]


@pytest.fixture
def redis_url() -> str:
    parts = urlsplit(REDIS_URL)
    require_service("Redis", parts.hostname or "127.0.0.1", parts.port or 6379)
    return REDIS_URL


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(client: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"ts:quota:test:{uuid.uuid4().hex}"
    yield prefix
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def ledger(redis_url: str, prefix: str) -> AsyncIterator[RedisQuotaLedger]:
    ledger = RedisQuotaLedger.from_url(redis_url, prefix)
    yield ledger
    await ledger.close()


async def test_records_add_up_per_metric_in_the_day_and_the_month(
    ledger: RedisQuotaLedger,
) -> None:
    await ledger.record("ten_a", prompt_tokens=10, completion_tokens=5, now=NOW)
    await ledger.record("ten_a", prompt_tokens=20, completion_tokens=1, now=NOW, requests=2)
    used = await ledger.usage("ten_a", ALL_QUOTAS, NOW)
    for period in (DAY, MONTH):
        assert used[(period, QuotaMetric.REQUESTS)] == 3
        assert used[(period, QuotaMetric.PROMPT_TOKENS)] == 30
        assert used[(period, QuotaMetric.COMPLETION_TOKENS)] == 6
        assert used[(period, QuotaMetric.TOKENS)] == 36
    assert await ledger.usage("ten_b", ALL_QUOTAS, NOW) == {q.usage_key: 0 for q in ALL_QUOTAS}


async def test_a_new_day_and_month_start_from_zero_and_keys_expire_after_their_period(
    ledger: RedisQuotaLedger, client: aioredis.Redis
) -> None:
    await ledger.record("ten_a", prompt_tokens=10, completion_tokens=0, now=NOW)
    next_month = NOW + timedelta(hours=2)
    assert await ledger.usage("ten_a", ALL_QUOTAS, next_month) == {
        q.usage_key: 0 for q in ALL_QUOTAS
    }
    for period in (DAY, MONTH):
        key = ledger.key("ten_a", period, NOW)
        expected_s = int(period_end(period, NOW).timestamp()) + KEY_GRACE_S
        assert await client.expiretime(key) == expected_s
    assert ledger.key("ten_a", DAY, NOW).endswith(f"{{ten_a}}:day:{NOW:%Y-%m-%d}")
    assert ledger.key("ten_a", MONTH, NOW).endswith(f"{{ten_a}}:month:{NOW:%Y-%m}")


async def test_two_hundred_concurrent_records_sum_exactly(
    redis_url: str, prefix: str, ledger: RedisQuotaLedger
) -> None:
    # Two ledgers, as two gateway processes would have.
    other = RedisQuotaLedger.from_url(redis_url, prefix, max_connections=4)
    try:
        await asyncio.gather(
            *(
                (ledger if i % 2 else other).record(
                    "ten_a", prompt_tokens=i, completion_tokens=1, now=NOW
                )
                for i in range(200)
            )
        )
    finally:
        await other.close()
    used = await ledger.usage("ten_a", ALL_QUOTAS, NOW)
    for period in (DAY, MONTH):
        assert used[(period, QuotaMetric.REQUESTS)] == 200
        assert used[(period, QuotaMetric.PROMPT_TOKENS)] == sum(range(200))
        assert used[(period, QuotaMetric.TOKENS)] == sum(range(200)) + 200


async def test_recorded_usage_makes_a_hard_quota_refuse(ledger: RedisQuotaLedger) -> None:
    q = Quota(QuotaMetric.REQUESTS, DAY, 3, Enforcement.HARD)
    for _ in range(3):
        used = await ledger.usage("ten_a", [q], NOW)
        assert isinstance(check_quotas([q], used, 10, 10, NOW), QuotaAllowed)
        await ledger.record("ten_a", prompt_tokens=10, completion_tokens=10, now=NOW)
    refused = check_quotas([q], await ledger.usage("ten_a", [q], NOW), 10, 10, NOW)
    assert isinstance(refused, QuotaExceeded) and refused.used == 3


async def test_an_unreachable_redis_reads_as_unused_and_drops_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = RedisQuotaLedger.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    try:
        with caplog.at_level(logging.WARNING):
            await ledger.record("ten_a", prompt_tokens=1, completion_tokens=1, now=NOW)
            used = await ledger.usage("ten_a", ALL_QUOTAS, NOW)
            await ledger.usage("ten_a", ALL_QUOTAS, NOW)
    finally:
        await ledger.close()
    assert used == {q.usage_key: 0 for q in ALL_QUOTAS}
    warnings = [r for r in caplog.records if "quota ledger store unreachable" in r.message]
    assert len(warnings) == 1  # once per outage, not once per call


async def test_with_a_redis_url_the_factory_builds_the_redis_ledger(redis_url: str) -> None:
    ledger = create_quota_ledger(redis_url)
    assert isinstance(ledger, RedisQuotaLedger)
    await ledger.close()
