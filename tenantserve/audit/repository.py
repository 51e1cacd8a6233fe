"""`AuditRepository`: audit entries in and out of `audit_log`, on one connection (the
caller owns the transaction). Inserts only: the table has no update or delete path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantserve.audit.entry import AuditEntry, ChainHead
from tenantserve.audit.tables import audit_log


@dataclass(frozen=True)
class AuditQuery:
    """Which entries a page holds: seq strictly between `after_seq` and `before_seq`,
    matching every filter given, `at` in [since, until); oldest or newest first."""

    after_seq: int = 0
    before_seq: int | None = None
    action: str | None = None
    target: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    newest_first: bool = False


class AuditRepository:
    """Reads and appends of `audit_log` over `conn`."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def head(self) -> ChainHead | None:
        """The newest entry's seq and hash (None: the log is empty)."""
        row = (
            await self._conn.execute(
                select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
            )
        ).first()
        return ChainHead(int(row.seq), str(row.hash)) if row is not None else None

    async def last_seq(self) -> int:
        """The highest seq stored (0: none)."""
        value = await self._conn.scalar(select(func.max(audit_log.c.seq)))
        return int(value or 0)

    async def add(self, entry: AuditEntry) -> None:
        await self._conn.execute(
            audit_log.insert().values(
                seq=entry.seq,
                id=entry.id,
                at=entry.at,
                actor=entry.actor,
                action=entry.action,
                target=entry.target,
                details=entry.details,
                prev_hash=entry.prev_hash,
                hash=entry.hash,
            )
        )

    async def entries(self, query: AuditQuery, limit: int) -> Sequence[AuditEntry]:
        """Up to `limit` entries matching `query`, in its order."""
        where = [audit_log.c.seq > query.after_seq]
        if query.before_seq is not None:
            where.append(audit_log.c.seq < query.before_seq)
        for column, value in (
            (audit_log.c.action, query.action),
            (audit_log.c.target, query.target),
            (audit_log.c.actor, query.actor),
        ):
            if value is not None:
                where.append(column == value)
        if query.since is not None:
            where.append(audit_log.c.at >= query.since)
        if query.until is not None:
            where.append(audit_log.c.at < query.until)
        order = audit_log.c.seq.desc() if query.newest_first else audit_log.c.seq
        rows = await self._conn.execute(
            select(audit_log).where(*where).order_by(order).limit(limit)
        )
        return [_entry(row) for row in rows]


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=int(row.seq),
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        details=dict(row.details or {}),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
