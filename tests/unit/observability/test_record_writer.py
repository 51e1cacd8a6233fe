"""The background batch writer: batches, bounded queue, flush at close, content caps."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import pytest

from tenantserve.gateway.request_log import RequestRecord, rejected_record
from tenantserve.observability.config import RequestRecordsConfig
from tenantserve.observability.record_store import RequestRecordStore
from tenantserve.observability.record_writer import TRUNCATED, RecordWriter


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[RequestRecord]] = []
        self.deleted_before: list[datetime] = []
        self.fail = fail

    async def insert(self, records: Sequence[RequestRecord]) -> int:
        if self.fail:
            raise OSError("database down")
        self.batches.append(list(records))
        return len(records)

    async def delete_before(self, cutoff: datetime) -> int:
        self.deleted_before.append(cutoff)
        return 0


def record(n: int, **kw: Any) -> RequestRecord:
    base = rejected_record(f"req_{n}", "ten_a", "free", "us", "m", 429, "x", 1000.0, 1.0)
    return RequestRecord(**{**base.__dict__, **kw})


def writer(store: FakeStore, **cfg: Any) -> RecordWriter:
    config = RequestRecordsConfig(**{"flush_interval_s": 0.05, **cfg})
    return RecordWriter(cast(RequestRecordStore, store), config, clock=lambda: 86400.0 * 40)


async def test_records_are_written_in_one_batch_per_interval_off_the_request_path() -> None:
    store = FakeStore()
    w = writer(store)
    w.start()
    for n in range(7):
        w.submit(record(n))
    assert store.batches == []  # submit never writes
    await asyncio.sleep(0.2)
    assert [len(b) for b in store.batches] == [7]
    await w.close()
    assert w.written == 7


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    store = FakeStore()
    w = writer(store, batch_size=5, flush_interval_s=30.0)
    w.start()
    await asyncio.sleep(0)
    for n in range(5):
        w.submit(record(n))
    await asyncio.sleep(0.05)
    assert [len(b) for b in store.batches] == [5]
    await w.close()


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    store = FakeStore()
    w = writer(store, queue_size=3, batch_size=100)
    for n in range(5):
        w.submit(record(n))
    assert (w.queued, w.dropped) == (3, 2)
    await w.close()  # never started: close still writes what is queued
    assert [r.request_id for r in store.batches[0]] == ["req_0", "req_1", "req_2"]


async def test_a_failed_insert_is_counted_and_does_not_stop_the_writer() -> None:
    store = FakeStore(fail=True)
    w = writer(store)
    w.submit(record(1))
    assert await w.flush() == 0
    assert (w.failed, w.queued) == (1, 0)


async def test_opted_in_content_is_cut_to_the_configured_size() -> None:
    store = FakeStore()
    w = writer(store, max_content_chars=10)
    w.submit(record(1, prompt_text="p" * 50, completion_text="short"))
    await w.flush()
    [stored] = store.batches[0]
    assert stored.prompt_text == "p" * 10 + TRUNCATED
    assert stored.completion_text == "short"


async def test_retention_deletes_records_older_than_the_configured_age() -> None:
    store = FakeStore()
    w = writer(store, retention_days=30)
    await w.delete_expired()
    [cutoff] = store.deleted_before
    assert cutoff.timestamp() == pytest.approx(86400.0 * 10)


def test_content_never_reaches_the_log_lines() -> None:
    line = record(1, prompt_text="secret prompt", completion_text="secret answer").to_json()
    assert "secret" not in line and "prompt_text" not in line
