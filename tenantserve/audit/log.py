"""`AuditLog`: the audit log over the metadata database — the `AuditRecorder` every admin
action writes to, pages of it, and verification of its hash chain.

Appends are serialized so the chain never forks, within a process (an asyncio lock) and
across gateway processes and CLI commands (the database): on PostgreSQL the append's
transaction takes a transaction-level advisory lock before reading the head; on SQLite it
is a `BEGIN IMMEDIATE` transaction (one writer at a time, others wait out the busy
timeout). Details are redacted (`facts.redact`) before they are hashed and stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantserve.audit.chain import ChainVerifier, VerifyReport
from tenantserve.audit.entry import AuditEntry, ChainHead
from tenantserve.audit.facts import redact
from tenantserve.audit.repository import AuditQuery, AuditRepository
from tenantserve.errors import InvalidRequestError

# pg_advisory_xact_lock key of audit appends ("audit" in ASCII).
PG_APPEND_LOCK = 0x61_7564_6974
MAX_PAGE = 1000
VERIFY_BATCH = 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditPage:
    """Entries in the query's order; `next_cursor` is the seq to pass as the next page's
    `after_seq` (oldest first) or `before_seq` (newest first); None: the end."""

    entries: Sequence[AuditEntry]
    next_cursor: int | None


class AuditLog:
    """Append-only, hash-chained audit entries in the metadata database behind `engine`;
    implements `AuditRecorder`."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = asyncio.Lock()

    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one entry; raises when it could not be stored."""
        await self.append(actor, action, target, details)

    async def append(
        self,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """The entry appended after the current head, in one serialized transaction."""
        safe = redact(dict(details or {}))
        async with self._lock, self._engine.connect() as conn:
            await self._begin_exclusive(conn)
            repo = AuditRepository(conn)
            entry = AuditEntry.create(await repo.head(), self._clock(), actor, action, target, safe)
            await repo.add(entry)
            await conn.commit()
        return entry

    async def head(self) -> ChainHead | None:
        """The newest entry's seq and hash (keep it elsewhere to detect a cut tail later)."""
        async with self._engine.connect() as conn:
            return await AuditRepository(conn).head()

    async def page(self, query: AuditQuery | None = None, limit: int = 100) -> AuditPage:
        """Up to `limit` (1..1000) entries matching `query` (default: all, oldest first)."""
        query = query or AuditQuery()
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}")
        if query.after_seq < 0 or (query.before_seq is not None and query.before_seq < 1):
            raise InvalidRequestError("after must be a seq (0 or more), before one of 1 or more")
        if query.since and query.until and query.since >= query.until:
            raise InvalidRequestError("since must be before until")
        async with self._engine.connect() as conn:
            entries = await AuditRepository(conn).entries(query, limit)
        next_cursor = entries[-1].seq if len(entries) == limit else None
        return AuditPage(entries=entries, next_cursor=next_cursor)

    async def verify(self, anchor: ChainHead | None = None) -> VerifyReport:
        """Walk the whole chain in seq order; the first edited, removed, reordered or
        inserted entry is named (with `anchor`, a cut tail too)."""
        async with self._engine.connect() as conn:
            repo = AuditRepository(conn)
            verifier = ChainVerifier(anchor, last_seq=await repo.last_seq())
            after = 0
            while True:
                batch = await repo.entries(AuditQuery(after_seq=after), VERIFY_BATCH)
                for entry in batch:
                    if verifier.feed(entry) is not None:
                        return verifier.finish()
                if len(batch) < VERIFY_BATCH:
                    return verifier.finish()
                after = batch[-1].seq

    async def _begin_exclusive(self, conn: AsyncConnection) -> None:
        """Start the append's transaction holding the log's write lock."""
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_APPEND_LOCK})
        else:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
