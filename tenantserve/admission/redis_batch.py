"""Group commit for Redis calls that need not be one round trip each.

`Batcher.submit(item)` returns the item's result once `flush` has written it. An item
that finds no flush running is flushed at once, alone; items submitted while a flush is
in flight wait for it and then go together in the next. Unloaded, an item waits one
round trip, as it would alone; loaded, N items cost one round trip instead of N.
Nothing waits on a timer. With `start_timeout_s`, an item that waited longer than that
for its flush to start is not sent: `expired(item)` is its result.

The flush runs in its own task: a caller cancelled while waiting does not take its item
back (a rate-limit commit or a quota record is never lost to a cancellation); the
`abandoned` callback gets the item and its result instead (a reservation nobody will
commit can be given back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Most items one flush writes (one pipeline); the rest go in the next.
MAX_BATCH = 256


class Batcher(Generic[T, R]):
    """Coalesces submitted items into calls of `flush(items) -> results` (one result per
    item, in order), one call at a time. If `flush` raises, every submitter of that batch
    gets the exception."""

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[list[R]]],
        abandoned: Callable[[T, R], None] | None = None,
        *,
        start_timeout_s: float | None = None,
        expired: Callable[[T], R] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if (start_timeout_s is None) != (expired is None):
            raise ValueError("start_timeout_s and expired go together")
        self._flush = flush
        self._abandoned = abandoned
        self._start_timeout_s = start_timeout_s
        self._expired = expired
        self._max_batch = max_batch
        self._pending: list[_Entry[T, R]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        return await self.submit_nowait(item)  # cancelled: the item is still written

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the future of its result (nobody need wait for it)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        entry = (item, done, loop.time())
        if self._task is None:
            self._task = loop.create_task(self._run([entry]))
        else:
            self._pending.append(entry)
        return done

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self, batch: list[_Entry[T, R]]) -> None:
        try:
            while batch:
                await self._write(batch)
                batch = self._next_batch()
        finally:
            self._task = None
            if self._pending:  # only when cancelled (the loop is closing): dropped
                log.warning("%d batched Redis calls dropped at shutdown", len(self._pending))
                for _, waiter, _ in self._pending:
                    waiter.cancel()
                self._pending = []

    def _next_batch(self) -> list[_Entry[T, R]]:
        n = self._max_batch
        batch, self._pending = self._pending[:n], self._pending[n:]
        if self._start_timeout_s is None or not batch:
            return batch
        assert self._expired is not None
        deadline = asyncio.get_running_loop().time() - self._start_timeout_s
        live = []
        for entry in batch:
            item, waiter, queued_at = entry
            if queued_at >= deadline:
                live.append(entry)
            elif not waiter.done():
                waiter.set_result(self._expired(item))
        return live

    async def _write(self, batch: list[_Entry[T, R]]) -> None:
        try:
            results = await self._flush([item for item, _, _ in batch])
        except Exception as e:
            for _, waiter, _ in batch:
                if not waiter.done():
                    waiter.set_exception(e)
                    waiter.exception()  # retrieved: nobody may be waiting
            return
        for (item, waiter, _), result in zip(batch, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)
            elif self._abandoned is not None:
                self._abandoned(item, result)


# An item, the future of its result, and when it was submitted (loop time).
_Entry = tuple[T, "asyncio.Future[R]", float]
