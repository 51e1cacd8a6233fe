"""`RecordWriter`: request records into the store off the hot path.

    submit(record)    called by the request path; appends to a bounded in-memory queue and
                      returns (no I/O, no await); a full queue drops the record and counts it
    background task   every `flush_interval_s`, or as soon as `batch_size` records wait:
                      one INSERT per batch (`RequestRecordStore.insert`)
    retention task    every `retention_check_s`: delete records older than `retention_days`
    close()           stops both and writes what is still queued

A failed INSERT is logged and its batch counted in `failed` (the records are also in the
request log lines and files, which stay the record of last resort).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tenantserve.gateway.request_log import RequestRecord
from tenantserve.observability.config import RequestRecordsConfig
from tenantserve.observability.record_store import RequestRecordStore

logger = logging.getLogger(__name__)

TRUNCATED = "…[truncated]"


class RecordWriter:
    """Batches request records into the store; single event loop."""

    def __init__(
        self,
        store: RequestRecordStore,
        cfg: RequestRecordsConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self._queue: deque[RequestRecord] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.written = 0  # records handed to the store
        self.dropped = 0  # records refused because the queue was full
        self.failed = 0  # records of batches the store refused

    def submit(self, record: RequestRecord) -> None:
        """Queue a record (never blocks); drops it, counted, when the queue is full."""
        if len(self._queue) >= self.cfg.queue_size:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                logger.warning("request records queue full: %d records dropped", self.dropped)
            return
        self._queue.append(self._capped(record))
        if len(self._queue) >= self.cfg.batch_size:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start the flush and retention tasks (on the running loop)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._flush_forever()),
                asyncio.create_task(self._retain_forever()),
            ]

    async def close(self) -> None:
        """Stop the tasks and write everything still queued."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.flush()

    async def flush(self) -> int:
        """Write every queued record now, a batch at a time; returns how many."""
        total = 0
        while self._queue:
            n = min(len(self._queue), self.cfg.batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            try:
                await self.store.insert(batch)
            except Exception:
                self.failed += len(batch)
                logger.exception("writing %d request records failed", len(batch))
                continue
            self.written += len(batch)
            total += len(batch)
        return total

    async def delete_expired(self) -> int:
        """Delete the records past the retention age; returns how many."""
        cutoff = datetime.fromtimestamp(self.clock(), UTC) - timedelta(days=self.cfg.retention_days)
        return await self.store.delete_before(cutoff)

    async def _flush_forever(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def _retain_forever(self) -> None:
        while not self._closing:
            try:
                deleted = await self.delete_expired()
                if deleted:
                    logger.info("deleted %d request records past retention", deleted)
            except Exception:
                logger.exception("request records retention failed")
            await asyncio.sleep(self.cfg.retention_check_s)

    def _capped(self, record: RequestRecord) -> RequestRecord:
        limit = self.cfg.max_content_chars
        prompt, completion = record.prompt_text, record.completion_text
        if (prompt is None or len(prompt) <= limit) and (
            completion is None or len(completion) <= limit
        ):
            return record
        return replace(
            record, prompt_text=_cut(prompt, limit), completion_text=_cut(completion, limit)
        )


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + TRUNCATED
