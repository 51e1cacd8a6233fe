"""OutboxDrain (the embedded pipeline) on a real SQLite database: everything appended is
counted once, including after a crash between the store's commit and the outbox delete,
duplicates and malformed entries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio

from tenantserve.metering.drain import OutboxDrain
from tenantserve.metering.outbox import Outbox
from tenantserve.metering.report import Granularity
from tenantserve.metering.store import UsageStore
from tests.helpers.usage import sqlite_usage_store, usage_event

T = 1_795_000_000.0
WINDOW = (
    datetime.fromtimestamp(T, UTC) - timedelta(days=1),
    datetime.fromtimestamp(T, UTC) + timedelta(days=1),
)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[UsageStore]:
    async with sqlite_usage_store(tmp_path) as store:
        yield store


async def test_everything_appended_is_counted_once(store: UsageStore, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    drain = OutboxDrain(outbox, store, batch_size=7)
    try:
        await outbox.append_many([usage_event(i, T, "ten_a") for i in range(40)])
        await outbox.append_many([usage_event(i, T, "ten_a") for i in range(10)])  # again
        assert await drain.drain() == 50
        assert outbox.pending() == 0
        report = await store.usage("ten_a", *WINDOW, Granularity.DAY)
        assert report.total.requests == 40
        assert report.total.input_tokens == 400 and report.total.output_tokens == 200
        assert await store.count_events("ten_a") == 40
    finally:
        outbox.close()


async def test_a_crash_after_the_commit_before_the_delete_counts_nothing_twice(
    store: UsageStore, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    try:
        await outbox.append_many([usage_event(i, T, "ten_b") for i in range(5)])
        # The first run committed the batch and died before deleting it.
        assert await store.apply([e.event() for e in outbox.read()]) == 5
        assert outbox.pending() == 5
        assert await OutboxDrain(outbox, store).drain() == 5  # the restart drains again
        report = await store.usage("ten_b", *WINDOW, Granularity.HOUR)
        assert report.total.requests == 5 and outbox.pending() == 0
    finally:
        outbox.close()


async def test_a_malformed_entry_is_dropped_and_the_rest_counted(
    store: UsageStore, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    try:
        await outbox.append(usage_event(1, T, "ten_c"))
        outbox._writer_conn.execute(  # a row a bug (or a disk) mangled
            "INSERT INTO outbox (event_id, tenant_id, body) VALUES ('x', 'ten_c', 'garbage')"
        )
        await outbox.append(usage_event(2, T, "ten_c"))
        assert await OutboxDrain(outbox, store).drain() == 3
        report = await store.usage("ten_c", *WINDOW, Granularity.DAY)
        assert report.total.requests == 2
    finally:
        outbox.close()


async def test_the_running_drain_makes_usage_visible_quickly_and_drains_on_close(
    store: UsageStore, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    drain = OutboxDrain(outbox, store, poll_interval_s=0.02)
    drain.start()
    try:
        await outbox.append(usage_event(1, T, "ten_d"))
        for _ in range(100):
            if await store.count_events("ten_d") == 1:
                break
            await asyncio.sleep(0.01)
        assert await store.count_events("ten_d") == 1
        await outbox.append(usage_event(2, T, "ten_d"))
    finally:
        await drain.close()
        outbox.close()
    assert await store.count_events("ten_d") == 2
