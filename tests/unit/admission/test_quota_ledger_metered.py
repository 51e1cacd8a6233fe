"""MeteredQuotaLedger on a real SQLite usage store: usage is the metered buckets of the
UTC day and month, plus this process's charges since the snapshot; a snapshot lives
`ttl_s`; a store that cannot be read fails open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio

from tenantserve.admission.quota_ledger_metered import MeteredQuotaLedger
from tenantserve.admission.quotas import Enforcement, Quota, QuotaMetric, QuotaPeriod
from tenantserve.metering.store import UsageStore
from tenantserve.storage.database import create_engine
from tests.helpers.usage import sqlite_usage_store, usage_event

NOW = datetime.now(UTC)
DAY, MONTH = QuotaPeriod.DAY, QuotaPeriod.MONTH
QUOTAS = [Quota(m, p, 10**9, Enforcement.HARD) for m in QuotaMetric for p in QuotaPeriod]


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[UsageStore]:
    async with sqlite_usage_store(tmp_path) as store:
        yield store


async def test_usage_is_the_metered_day_and_month(store: UsageStore) -> None:
    start_of_day = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    today = max(NOW.timestamp() - 1, start_of_day.timestamp())
    earlier = (start_of_day - timedelta(seconds=30)).timestamp()
    in_month = start_of_day.day > 1  # yesterday is this month unless today is the 1st
    await store.apply([usage_event(1, today, "ten_a"), usage_event(2, today, "ten_a")])
    await store.apply([usage_event(3, earlier, "ten_a"), usage_event(4, today, "ten_b")])
    used = await MeteredQuotaLedger(store).usage("ten_a", QUOTAS, NOW)
    assert used[(DAY, QuotaMetric.REQUESTS)] == 2
    assert used[(DAY, QuotaMetric.PROMPT_TOKENS)] == 20
    assert used[(DAY, QuotaMetric.COMPLETION_TOKENS)] == 10
    assert used[(DAY, QuotaMetric.TOKENS)] == 30
    assert used[(MONTH, QuotaMetric.REQUESTS)] == (3 if in_month else 2)


async def test_charges_count_until_the_next_snapshot_then_the_store_does(
    store: UsageStore,
) -> None:
    ledger = MeteredQuotaLedger(store, ttl_s=3600)
    assert (await ledger.usage("ten_c", QUOTAS, NOW))[(DAY, QuotaMetric.REQUESTS)] == 0
    await ledger.record("ten_c", prompt_tokens=10, completion_tokens=5, now=NOW)
    used = await ledger.usage("ten_c", QUOTAS, NOW)
    assert used[(DAY, QuotaMetric.REQUESTS)] == 1 and used[(DAY, QuotaMetric.TOKENS)] == 15
    # The request's event reaches the store; a new snapshot counts it once.
    await store.apply([usage_event(5, NOW.timestamp() - 1, "ten_c")])
    ledger.ttl_s = 0
    used = await ledger.usage("ten_c", QUOTAS, NOW)
    assert used[(DAY, QuotaMetric.REQUESTS)] == 1 and used[(DAY, QuotaMetric.TOKENS)] == 15


async def test_an_unreadable_store_fails_open(store: UsageStore) -> None:
    await store.apply([usage_event(6, NOW.timestamp() - 1, "ten_d")])
    ledger = MeteredQuotaLedger(store, ttl_s=0)
    assert (await ledger.usage("ten_d", QUOTAS, NOW))[(DAY, QuotaMetric.REQUESTS)] == 1
    await store.engine.dispose()
    nowhere = create_engine("postgresql://nobody@127.0.0.1:1/none")  # connection refused
    broken = MeteredQuotaLedger(UsageStore(nowhere))
    assert (await broken.usage("ten_d", QUOTAS, NOW))[(DAY, QuotaMetric.REQUESTS)] == 0
    await broken.close()
    await nowhere.dispose()
