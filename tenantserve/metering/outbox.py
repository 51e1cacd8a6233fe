"""`Outbox`: the durable local queue every usage event is written to before its request
is considered done.

    await outbox.append(event)     durable when it returns (group commit: the events
                                   appended while one write is in flight share the next)
    outbox.read(limit)             the oldest entries, in order (a drainer's batch)
    outbox.delete(seqs)            after the batch is safely downstream

A SQLite file in WAL mode, written by one thread per process (the event loop never
waits on the disk; it awaits a future). Several processes may share the file (gateway
workers, a separate shipper): SQLite serialises the writers; two drainers may read the
same rows, which is harmless because every stage downstream deduplicates by event id.
An entry is deleted only after the stage it was handed to has made it durable, so a
crash anywhere leaves it to be sent again — at least once here, exactly once after the
aggregator's ledger.

`synchronous=FULL` (the default) makes a returned append survive power loss (one fsync
per group commit); `NORMAL` survives a process crash (SIGKILL) but not power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tenantserve.metering.events import UsageEvent

logger = logging.getLogger(__name__)

OUTBOX_FILE = "usage-outbox.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    body BLOB NOT NULL
)
"""
_MAX_GROUP = 4_096  # events per group commit


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    tenant_id: str
    event_id: str
    body: bytes  # the event's JSON (`UsageEvent.to_json`)

    def event(self) -> UsageEvent:
        return UsageEvent.from_json(self.body)


_Pending = tuple[list[UsageEvent], asyncio.AbstractEventLoop, asyncio.Future[None]]


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(_SCHEMA)
    return conn


class Outbox:
    """One process's handle on the outbox file."""

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"outbox synchronous must be FULL, NORMAL or EXTRA: {synchronous}")
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sync = synchronous.upper()
        self._writer_conn = _connect(path, self._sync)
        self._reader_conn = _connect(path, self._sync)
        self._reader_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="outbox-writer", daemon=True)
        self._thread.start()
        self._closed = False
        # Set after each commit: an in-process drainer waits on it instead of polling.
        self.appended = threading.Event()

    async def append(self, event: UsageEvent) -> None:
        """Durably store one event (returns once it is on disk)."""
        await self.append_many([event])

    async def append_many(self, events: Sequence[UsageEvent]) -> None:
        if self._closed:
            raise RuntimeError("the outbox is closed")
        if not events:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((list(events), loop, done))
        await done

    def append_sync(self, events: Sequence[UsageEvent]) -> None:
        """`append_many` for code without an event loop (CLI, tests)."""
        self._insert(self._writer_conn, list(events))

    def read(self, limit: int = 1_000, after_seq: int = 0) -> list[OutboxEntry]:
        """Up to `limit` of the oldest entries with seq > `after_seq`."""
        with self._reader_lock:
            rows = self._reader_conn.execute(
                "SELECT seq, tenant_id, event_id, body FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [
            OutboxEntry(seq, tenant, event_id, _bytes(body)) for seq, tenant, event_id, body in rows
        ]

    def delete(self, seqs: Iterable[int]) -> None:
        """Drop entries that are safely downstream (consecutive seqs as one range each)."""
        ranges = _runs(sorted(seqs))
        if not ranges:
            return
        with self._reader_lock:
            conn = self._reader_conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", ranges)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def pending(self) -> int:
        """How many entries wait to be drained."""
        with self._reader_lock:
            return int(self._reader_conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        """Finish the writes queued so far, then close the file."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        with contextlib.suppress(sqlite3.Error):
            self._writer_conn.close()
        with self._reader_lock, contextlib.suppress(sqlite3.Error):
            self._reader_conn.close()

    # -- the writer thread ----------------------------------------------------------

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            size = len(first[0])
            while size < _MAX_GROUP:  # everything queued meanwhile joins this commit
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
                size += len(item[0])
            events = [e for pending in group for e in pending[0]]
            error: BaseException | None = None
            try:
                self._insert(self._writer_conn, events)
            except BaseException as e:  # each waiter gets the failure
                logger.exception("outbox write of %d events failed", len(events))
                error = e
            self.appended.set()
            for _, loop, done in group:
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_settle, done, error)

    @staticmethod
    def _insert(conn: sqlite3.Connection, events: list[UsageEvent]) -> None:
        rows = [(e.event_id, e.tenant_id, e.to_json()) for e in events]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO outbox (event_id, tenant_id, body) VALUES (?, ?, ?)", rows
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _bytes(body: bytes | str) -> bytes:
    """A stored body (BLOB; TEXT only if something else wrote the row)."""
    return body.encode() if isinstance(body, str) else bytes(body)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
