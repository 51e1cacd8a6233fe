"""Group commit for Redis writes that need not be one round trip each.

`Batcher.submit(item)` returns once `flush` has written the item. The first item finds
no flush running and starts one at the next turn of the event loop (so what else is
submitted in this turn joins it); items submitted while a flush is in flight wait for
it and go together in the next. Unloaded, an item waits one round trip, as it would
alone; loaded, N items cost one round trip instead of N. Nothing waits on a timer.

The flush runs in its own task: a caller that is cancelled while waiting does not take
its write back (a rate-limit commit or a quota record is never lost to a cancellation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Most items one flush writes (one pipeline); the rest go in the next.
MAX_BATCH = 512


class Batcher(Generic[T]):
    """Coalesces submitted items into calls of `flush(items)`, one at a time. `flush`
    should not raise (it handles the store's failures itself); if it does, the error is
    logged and the items' submitters return as if written."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], max_batch: int = MAX_BATCH):
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[T] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append(item)
        self._waiters.append(done)
        if self._task is None:
            self._task = loop.create_task(self._run())
        await done  # cancelled: the item is still written

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._pending:
                n = self._max_batch
                items, self._pending = self._pending[:n], self._pending[n:]
                waiters, self._waiters = self._waiters[:n], self._waiters[n:]
                try:
                    await self._flush(items)
                except Exception:
                    log.exception("a batched Redis write failed (%d items)", len(items))
                finally:
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)
        finally:
            self._task = None
            if self._pending:  # only when cancelled (the loop is closing): dropped
                log.warning("%d batched Redis writes dropped at shutdown", len(self._pending))
                for w in self._waiters:
                    w.cancel()
                self._pending, self._waiters = [], []
