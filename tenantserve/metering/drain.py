"""`OutboxDrain`: the embedded metering pipeline — the outbox drained straight into the
usage store, in process.

    read a batch (oldest first) → store.apply(batch)  [one transaction, ledger dedup]
                                → outbox.delete(batch)

A crash between the commit and the delete leaves the batch in the outbox; it is applied
again at the next start and the ledger counts none of it twice. The drain wakes on the
outbox's `appended` event, so usage is visible within one poll interval of the request's
end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tenantserve.errors import InvalidRequestError
from tenantserve.metering.events import UsageEvent
from tenantserve.metering.outbox import Outbox
from tenantserve.metering.store import UsageStore

logger = logging.getLogger(__name__)


class OutboxDrain:
    def __init__(
        self,
        outbox: Outbox,
        store: UsageStore,
        batch_size: int = 2_000,
        poll_interval_s: float = 0.05,
    ) -> None:
        self.outbox = outbox
        self.store = store
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.applied = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def drain_once(self) -> int:
        """Move one batch from the outbox into the store; how many entries it moved."""
        entries = await asyncio.to_thread(self.outbox.read, self.batch_size)
        if not entries:
            return 0
        events: list[UsageEvent] = []
        for entry in entries:
            try:
                events.append(entry.event())
            except InvalidRequestError:  # cannot be counted; keeping it would block the rest
                logger.error("dropping a malformed outbox entry %d: %r", entry.seq, entry.body)
        self.applied += await self.store.apply(events)
        await asyncio.to_thread(self.outbox.delete, [e.seq for e in entries])
        return len(entries)

    async def drain(self) -> int:
        """Drain until the outbox is empty; how many entries moved."""
        moved = 0
        while n := await self.drain_once():
            moved += n
        return moved

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-outbox-drain")

    async def _run(self) -> None:
        backoff = self.poll_interval_s
        while not self._stopping:
            try:
                moved = await self.drain_once()
                backoff = self.poll_interval_s
            except Exception:
                logger.exception("usage drain failed; retrying in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if moved < self.batch_size:
                await asyncio.to_thread(self.outbox.appended.wait, self.poll_interval_s)
                self.outbox.appended.clear()

    async def close(self) -> None:
        """Stop after a last drain (what is left stays in the outbox for the next start)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.drain()
