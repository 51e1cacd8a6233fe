"""Group commit (`redis_batch.Batcher`) without Redis: a recording flush."""

from __future__ import annotations

import asyncio

import pytest

from tenantserve.admission.redis_batch import Batcher


class Store:
    """A flush that records its batches; each takes `delay_s` (one 'round trip')."""

    def __init__(self, delay_s: float = 0.01, fail: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.fail = fail

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [i * 10 for i in items]


async def test_an_item_alone_is_flushed_at_once_and_gets_its_result() -> None:
    store = Store()
    batcher = Batcher(store.flush)
    assert await batcher.submit(1) == 10
    assert store.batches == [[1]]


async def test_items_arriving_during_a_flush_go_together_in_the_next() -> None:
    store = Store()
    batcher = Batcher(store.flush)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
    assert results == [0, 10, 20, 30, 40, 50]
    assert store.batches == [[0], [1, 2, 3, 4, 5]]  # the first alone, the rest in one


async def test_batches_are_capped() -> None:
    store = Store()
    batcher = Batcher(store.flush, max_batch=2)
    await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert store.batches == [[0], [1, 2], [3, 4]]


async def test_a_failed_flush_fails_every_submitter_of_that_batch_only() -> None:
    store = Store(fail=RuntimeError("down"))
    batcher = Batcher(store.flush)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    store.fail = None
    assert await batcher.submit(7) == 70  # the batcher goes on


async def test_a_cancelled_submitter_still_has_its_item_written_and_abandoned_sees_it() -> None:
    store = Store()
    abandoned: list[tuple[int, int]] = []
    batcher = Batcher(store.flush, abandoned=lambda item, result: abandoned.append((item, result)))
    task = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0)  # submitted, its flush in flight
    task.cancel()
    await batcher.drain()
    assert store.batches == [[3]]
    assert abandoned == [(3, 30)]


async def test_an_item_that_waited_past_the_start_timeout_is_not_sent() -> None:
    store = Store(delay_s=0.1)
    batcher = Batcher(store.flush, start_timeout_s=0.05, expired=lambda item: -item)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    second = await batcher.submit(2)  # waits behind the 0.1 s flush: past 0.05 s
    assert (await first, second) == (10, -2)
    assert store.batches == [[1]]
    assert await batcher.submit(3) == 30


def test_start_timeout_and_expired_go_together() -> None:
    with pytest.raises(ValueError):
        Batcher(Store().flush, start_timeout_s=1.0)
