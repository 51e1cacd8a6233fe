"""LocalQuotaLedger: counts per tenant, UTC day and month; a new period starts at zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tenantserve.admission import create_quota_ledger
from tenantserve.admission.quota_ledger_local import LocalQuotaLedger
from tenantserve.admission.quotas import Enforcement, Quota, QuotaMetric, QuotaPeriod

NOW = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
DAY, MONTH = QuotaPeriod.DAY, QuotaPeriod.MONTH
ALL_QUOTAS = [
    Quota(metric, period, 1, Enforcement.HARD) for metric in QuotaMetric for period in QuotaPeriod
]


async def test_records_add_up_per_metric_in_the_day_and_the_month() -> None:
    ledger = LocalQuotaLedger()
    await ledger.record("ten_a", prompt_tokens=10, completion_tokens=5, now=NOW)
    await ledger.record("ten_a", prompt_tokens=20, completion_tokens=1, now=NOW, requests=2)
    used = await ledger.usage("ten_a", ALL_QUOTAS, NOW)
    for period in (DAY, MONTH):
        assert used[(period, QuotaMetric.REQUESTS)] == 3
        assert used[(period, QuotaMetric.PROMPT_TOKENS)] == 30
        assert used[(period, QuotaMetric.COMPLETION_TOKENS)] == 6
        assert used[(period, QuotaMetric.TOKENS)] == 36


async def test_usage_names_only_the_quotas_asked_for_and_tenants_do_not_mix() -> None:
    ledger = LocalQuotaLedger()
    await ledger.record("ten_a", prompt_tokens=10, completion_tokens=5, now=NOW)
    tokens_month = Quota(QuotaMetric.TOKENS, MONTH, 100, Enforcement.SOFT)
    assert await ledger.usage("ten_a", [tokens_month], NOW) == {(MONTH, QuotaMetric.TOKENS): 15}
    assert await ledger.usage("ten_b", [tokens_month], NOW) == {(MONTH, QuotaMetric.TOKENS): 0}
    assert await ledger.usage("ten_a", [], NOW) == {}


async def test_a_new_day_and_a_new_month_start_from_zero() -> None:
    ledger = LocalQuotaLedger()
    await ledger.record("ten_a", prompt_tokens=10, completion_tokens=0, now=NOW)
    next_day = NOW + timedelta(hours=2)  # 2026-12-01 01:00: a new day and a new month
    await ledger.record("ten_a", prompt_tokens=1, completion_tokens=0, now=next_day)
    used = await ledger.usage("ten_a", ALL_QUOTAS, next_day)
    assert used[(DAY, QuotaMetric.PROMPT_TOKENS)] == 1
    assert used[(MONTH, QuotaMetric.PROMPT_TOKENS)] == 1
    # Later the same month, the day resets but the month keeps counting.
    later = next_day + timedelta(days=1)
    await ledger.record("ten_a", prompt_tokens=2, completion_tokens=0, now=later)
    used = await ledger.usage("ten_a", ALL_QUOTAS, later)
    assert used[(DAY, QuotaMetric.PROMPT_TOKENS)] == 2
    assert used[(MONTH, QuotaMetric.PROMPT_TOKENS)] == 3


async def test_old_periods_are_dropped_and_late_records_do_not_count() -> None:
    ledger = LocalQuotaLedger()
    await ledger.record("ten_a", prompt_tokens=10, completion_tokens=0, now=NOW)
    tomorrow = NOW + timedelta(days=1)
    await ledger.usage("ten_a", ALL_QUOTAS, tomorrow)
    assert ledger._counters == {}  # nothing of the finished day and month is kept
    await ledger.record("ten_a", prompt_tokens=3, completion_tokens=0, now=tomorrow)
    await ledger.record("ten_a", prompt_tokens=100, completion_tokens=0, now=NOW)  # late
    used = await ledger.usage("ten_a", ALL_QUOTAS, tomorrow)
    assert used[(DAY, QuotaMetric.PROMPT_TOKENS)] == 3
    assert used[(MONTH, QuotaMetric.PROMPT_TOKENS)] == 3


async def test_negative_counts_are_refused() -> None:
    ledger = LocalQuotaLedger()
    with pytest.raises(ValueError):
        await ledger.record("ten_a", prompt_tokens=-1, completion_tokens=0, now=NOW)


async def test_without_a_redis_url_the_factory_builds_the_local_ledger() -> None:
    ledger = create_quota_ledger(None)
    assert isinstance(ledger, LocalQuotaLedger)
    await ledger.close()
