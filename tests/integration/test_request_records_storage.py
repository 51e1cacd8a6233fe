"""The request records store on SQLite and PostgreSQL: one INSERT per batch, ids unique,
tenant scoping, newest-first pages with a cursor, retention, the SLO counts, and burn-rate
alerts from real rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from tenantserve.gateway.events import EventLog
from tenantserve.gateway.request_log import RequestRecord, rejected_record
from tenantserve.observability.record_store import RequestRecordStore
from tenantserve.observability.record_tables import request_records
from tenantserve.observability.slo_monitor import SLO_BURN_RATE, SloMonitor
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database

A, B = "ten_aaaaaaaaaaaaaaaa", "ten_bbbbbbbbbbbbbbbb"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture(scope="session")
def records_postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RequestRecordStore]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    else:
        url = request.getfixturevalue("records_postgres_url")
    await migrate(url)
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(delete(request_records))
    yield RequestRecordStore(db.engine)
    await db.dispose()


def served(
    n: int, tenant: str = A, at: float = NOW, status: str = "completed", **kw: Any
) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": f"req_{tenant[-1]}{n:04d}",
        "tenant_id": tenant,
        "tier": "premium",
        "pool": "shared",
        "model": "smollm2",
        "status": status,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "admission_ms": 1.0,
        "queue_ms": 0.5,
        "engine_queue_ms": 2.0,
        "ttft_ms": 100.0,
        "total_ms": 300.0,
        "region": "us",
        "started_at": at,
    }
    return RequestRecord(**{**fields, **kw})


async def test_a_batch_is_stored_once_and_a_repeated_id_is_skipped(
    store: RequestRecordStore,
) -> None:
    await store.insert([served(n) for n in range(3)])
    await store.insert([served(0), served(3)])  # req 0 again: skipped, not an error
    page = await store.page(A, limit=10)
    assert [r["id"] for r in page.data] == ["req_a0003", "req_a0002", "req_a0001", "req_a0000"]


async def test_a_record_is_only_found_for_its_own_tenant(store: RequestRecordStore) -> None:
    await store.insert([served(1, A)])
    assert (await store.get("req_a0001", tenant_id=A))["tenant_id"] == A  # type: ignore[index]
    assert await store.get("req_a0001", tenant_id=B) is None
    assert await store.get("req_a0001") is not None  # operators see every tenant's


async def test_pages_run_newest_first_with_a_cursor_and_filters(
    store: RequestRecordStore,
) -> None:
    rows = [served(n, at=NOW + n) for n in range(5)]
    rows.append(served(9, at=NOW + 2))  # same time as req 2: the id breaks the tie
    rows.append(served(7, tenant=B, at=NOW + 3))
    await store.insert(rows)
    first = await store.page(A, limit=3)
    assert [r["id"] for r in first.data] == ["req_a0004", "req_a0003", "req_a0009"]
    second = await store.page(A, limit=3, cursor=first.next_cursor)
    assert [r["id"] for r in second.data] == ["req_a0002", "req_a0001", "req_a0000"]
    assert second.next_cursor is None
    start = datetime.fromtimestamp(NOW + 1, UTC)
    end = datetime.fromtimestamp(NOW + 3, UTC)
    window = await store.page(A, start=start, end=end)
    assert [r["id"] for r in window.data] == ["req_a0009", "req_a0002", "req_a0001"]
    assert len((await store.page(None, limit=100)).data) == 7


async def test_a_rejection_keeps_its_status_and_code(store: RequestRecordStore) -> None:
    await store.insert(
        [rejected_record("req_r1", A, "free", "us", "m", 429, "rate_limit_exceeded", NOW, 0.4)]
    )
    page = await store.page(A, status="rejected")
    [record] = page.data
    assert (record["status"], record["http_status"], record["error_code"]) == (
        "rejected",
        429,
        "rate_limit_exceeded",
    )
    assert record["failed"] is False and "content" not in record


async def test_content_is_stored_only_when_given(store: RequestRecordStore) -> None:
    await store.insert([served(1, prompt_text="user: hi", completion_text="hello"), served(2)])
    assert (await store.get("req_a0001"))["content"] == {  # type: ignore[index]
        "prompt": "user: hi",
        "completion": "hello",
    }
    assert "content" not in (await store.get("req_a0002") or {})


async def test_retention_deletes_only_older_records(store: RequestRecordStore) -> None:
    await store.insert([served(1, at=NOW - 40 * 86400), served(2, at=NOW)])
    cutoff = datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    assert await store.delete_before(cutoff) == 1
    assert [r["id"] for r in (await store.page(A)).data] == ["req_a0002"]


async def test_window_counts_split_failures_refusals_and_slow_first_tokens(
    store: RequestRecordStore,
) -> None:
    rows = [
        served(1, ttft_ms=500.0),
        served(2, ttft_ms=1500.0),  # slow for premium (1 s)
        served(3, status="error", ttft_ms=None),
        rejected_record("req_r1", A, "premium", "us", "m", 429, "queue_full", NOW, 1.0),
        rejected_record("req_r2", A, "premium", "us", "m", 503, "overloaded", NOW, 1.0),
    ]
    await store.insert(rows)
    since = datetime.fromtimestamp(NOW - 60, UTC)
    [c] = await store.window_counts(since, {"premium": 1000.0, "standard": 2000.0})
    # eligible: 3 served + the 503 (the 429 is the client's); failed: error + 503.
    assert (c.tenant_id, c.eligible, c.failed, c.timed, c.slow) == (A, 4, 2, 2, 1)


async def test_ttft_percentiles_are_taken_over_the_last_hour_and_the_last_day(
    store: RequestRecordStore,
) -> None:
    now = datetime.now(UTC).timestamp()
    recent = [served(n, at=now - 60, ttft_ms=10.0 * (n + 1)) for n in range(10)]  # 10..100
    earlier = [served(n, at=now - 7200, ttft_ms=1000.0) for n in range(10, 20)]
    await store.insert(recent + earlier)
    [report] = await SloMonitor(store, EventLog()).report(A)
    ttft = report["ttft"]
    assert (ttft["p50_ms_1h"], ttft["p95_ms_1h"]) == (50.0, 100.0)
    assert (ttft["p50_ms_24h"], ttft["p95_ms_24h"], ttft["samples_24h"]) == (100.0, 1000.0, 20)


async def test_a_burning_tenant_gets_one_operator_event_per_episode(
    store: RequestRecordStore,
) -> None:
    now = datetime.now(UTC).timestamp()
    rows = [
        served(n, at=now - 60, status="error" if n % 5 == 0 else "completed") for n in range(40)
    ]
    rows += [served(n, tenant=B, at=now - 60) for n in range(40)]
    await store.insert(rows)
    events = EventLog()
    monitor = SloMonitor(store, events)
    await monitor.tick()
    await monitor.tick()
    burns = [e for e in events.events() if e.kind == SLO_BURN_RATE]
    assert [(e.tenant_id, e.details["sli"], e.details["rule"]) for e in burns] == [
        (A, "availability", "page"),
        (A, "availability", "ticket"),
    ]
    [report] = await monitor.report(A)
    assert report["availability"]["failed_30d"] == 8
    assert report["availability"]["error_budget_remaining"] < 0
    assert report["ttft"]["p95_ms_1h"] == 100.0
    assert {a["rule"] for a in report["alerts"]} == {"page", "ticket"}
    assert [e["kind"] for e in report["events"]] == [SLO_BURN_RATE, SLO_BURN_RATE]
