"""UsageStore on SQLite and PostgreSQL: the ledger dedups by event id in the same transaction as the
bucket increments; buckets by END time per minute and hour; reads per granularity."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import delete

from tenantserve.errors import InvalidRequestError
from tenantserve.metering.events import UsageStatus
from tenantserve.metering.report import Granularity, truncate
from tenantserve.metering.rows import bucket_rows
from tenantserve.metering.store import UsageStore
from tenantserve.metering.tables import usage_buckets, usage_events
from tenantserve.storage.database import create_engine
from tenantserve.storage.migrations import migrate
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database
from tests.helpers.usage import usage_event

BOUNDARY = datetime(2026, 12, 1, tzinfo=UTC)  # the November / December boundary


@pytest.fixture(scope="session")
def usage_postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest_asyncio.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UsageStore]:
    """An empty, migrated usage store on each backend."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}"
    else:
        url = request.getfixturevalue("usage_postgres_url")
    await migrate(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(delete(usage_events))
        await conn.execute(delete(usage_buckets))
    yield UsageStore(engine)
    await engine.dispose()


def test_truncate_to_each_granularity() -> None:
    t = datetime(2026, 11, 27, 13, 45, 12, 500, tzinfo=UTC)
    assert truncate(t, Granularity.MINUTE) == datetime(2026, 11, 27, 13, 45, tzinfo=UTC)
    assert truncate(t, Granularity.HOUR) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    assert truncate(t, Granularity.DAY) == datetime(2026, 11, 27, tzinfo=UTC)
    assert truncate(t, Granularity.MONTH) == datetime(2026, 11, 1, tzinfo=UTC)


def test_bucket_rows_sum_per_key_in_key_order() -> None:
    t = BOUNDARY.timestamp()
    events = [usage_event(i, t - 30 + i, "ten_a") for i in range(3)]
    rows = bucket_rows(events)
    assert [r["granularity"] for r in rows] == ["hour", "minute"]
    assert all(r["requests"] == 3 and r["input_tokens"] == 30 for r in rows)
    assert rows == sorted(rows, key=lambda r: tuple(r[k] for k in ("tenant_id", "granularity")))


async def test_an_event_counts_once_however_often_it_arrives(store: UsageStore) -> None:
    t = BOUNDARY.timestamp() - 3600
    events = [usage_event(i, t, "ten_a") for i in range(10)]
    assert await store.apply(events) == 10
    assert await store.apply([*events[:5], usage_event(10, t, "ten_a")]) == 1
    assert await store.apply(events + events) == 0
    report = await store.usage("ten_a", BOUNDARY - timedelta(days=1), BOUNDARY)
    assert report.total.requests == 11 and await store.count_events() == 11


async def test_a_request_is_counted_in_the_period_of_its_end_time(store: UsageStore) -> None:
    t = BOUNDARY.timestamp()
    late = usage_event(1, t - 0.1, "ten_b", started_at=t - 30)  # ends 23:59:59.9
    spanning = usage_event(2, t + 0.1, "ten_b", started_at=t - 30)  # ends 00:00:00.1
    await store.apply([late, spanning])
    november = await store.usage(
        "ten_b", BOUNDARY - timedelta(days=30), BOUNDARY, Granularity.MONTH
    )
    december = await store.usage(
        "ten_b", BOUNDARY, BOUNDARY + timedelta(days=31), Granularity.MONTH
    )
    assert november.total.requests == december.total.requests == 1
    assert november.buckets[0].start == datetime(2026, 11, 1, tzinfo=UTC)
    assert december.buckets[0].start == BOUNDARY
    assert await store.event_ids(BOUNDARY, BOUNDARY + timedelta(hours=1)) == {spanning.event_id}


async def test_buckets_split_by_model_and_adapter_and_count_statuses(store: UsageStore) -> None:
    t = BOUNDARY.timestamp() - 7200
    await store.apply(
        [
            usage_event(1, t, "ten_c"),
            usage_event(2, t, "ten_c", adapter="tone"),
            usage_event(3, t, "ten_c", status=UsageStatus.CANCELLED, output_tokens=2),
            usage_event(4, t, "ten_c", status=UsageStatus.ERROR, output_tokens=0),
            usage_event(5, t, "ten_x"),  # another tenant
        ]
    )
    report = await store.usage("ten_c", BOUNDARY - timedelta(days=1), BOUNDARY, Granularity.DAY)
    by_adapter = {b.adapter: b.counters for b in report.buckets}
    assert by_adapter[""].requests == 3 and by_adapter["tone"].requests == 1
    total = report.total
    assert (total.requests, total.cancelled, total.errors) == (4, 1, 1)
    assert total.input_tokens == 30  # the failed request's prompt is not billed
    assert total.output_tokens == 5 + 5 + 2
    assert total.engine_seconds == pytest.approx(1.0)
    everyone = await store.usage(None, BOUNDARY - timedelta(days=1), BOUNDARY)
    assert everyone.total.requests == 5 and everyone.tenant_id == "*"
    month = await store.totals("ten_c", truncate(BOUNDARY - timedelta(days=1), Granularity.MONTH))
    assert month == total


async def test_an_empty_window_is_refused(store: UsageStore) -> None:
    with pytest.raises(InvalidRequestError):
        await store.usage("ten_a", BOUNDARY, BOUNDARY)
