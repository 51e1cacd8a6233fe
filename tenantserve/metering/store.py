"""`UsageStore`: the processed-event ledger and the per-tenant usage buckets.

    apply(events)      in ONE transaction: insert the events not seen before into the
                       ledger (`usage_events`, keyed by event id), add exactly those to
                       their minute and hour buckets; returns how many were new
    usage(...)         a tenant's buckets (minute / hour / day / month) and the total
    totals(...)        one tenant's sums since a time (quota periods)
    event_ids(...)     the metered event ids in a window (reconciliation)

Deduplication is the ledger's primary key: an event arriving twice (redelivered by the
stream, re-shipped from the outbox after a crash, re-emitted by reconciliation) adds
nothing the second time, on SQLite and PostgreSQL alike. Ledger rows are written in
event-id order and bucket rows in key order, so concurrent aggregators never deadlock.

On PostgreSQL `apply` is two statements on the asyncpg connection under one transaction:
the events go in as one array per column (`INSERT ... SELECT FROM unnest(...) ON CONFLICT
DO NOTHING RETURNING event_id`), then the buckets of the returned (new) events are
upserted the same way. Both are prepared once per connection and cost a few microseconds
per event (the SQLAlchemy multi-VALUES insert cost ~300 µs of client CPU per event).
The rows, arrays and statements are built in `rows.py`; `usage` answers in the
vocabulary of `report.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantserve.errors import InvalidRequestError
from tenantserve.metering.events import UsageEvent
from tenantserve.metering.report import (
    COUNTERS,
    Counters,
    Granularity,
    UsageBucket,
    UsageReport,
    truncate,
)
from tenantserve.metering.rows import (
    BUCKET_KEY,
    PG_INSERT_EVENTS,
    PG_UPSERT_BUCKETS,
    bucket_columns,
    bucket_rows,
    event_columns,
    event_row,
)
from tenantserve.metering.tables import usage_buckets, usage_events

# Rows per INSERT statement (SQLite allows 32,766 bound parameters; 18 columns each).
_CHUNK = 1_000


def _counters(row: Any) -> Counters:
    """Counters from a row of sums (PostgreSQL sums integers as Decimal; NULL: none)."""
    values: dict[str, Any] = {c: int(getattr(row, c) or 0) for c in COUNTERS}
    values["engine_seconds"] = float(row.engine_seconds or 0.0)
    return Counters(**values)


class UsageStore:
    """The usage tables of one database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = postgresql if engine.dialect.name == "postgresql" else sqlite

    async def apply(self, events: Sequence[UsageEvent]) -> int:
        """Count the events not counted before (in one transaction); how many were new.
        Nothing is counted when it raises."""
        if not events:
            return 0
        unique = list({e.event_id: e for e in events}.values())
        # Ledger rows in event-id order: concurrent aggregators lock them in one order.
        unique.sort(key=lambda e: e.event_id)
        try:
            if self._dialect is postgresql:
                return await self._apply_postgres(unique)
            async with self.engine.begin() as conn:
                fresh = await self._insert_new(conn, unique)
                if fresh:
                    new = [e for e in unique if e.event_id in fresh]
                    await self._add_to_buckets(conn, bucket_rows(new))
            return len(fresh)
        except (
            asyncpg.DataError,
            asyncpg.IntegrityConstraintViolationError,
            sa_exc.DataError,
            sa_exc.IntegrityError,
        ) as e:
            raise InvalidRequestError(f"usage events rejected by the database: {e}") from e

    async def _apply_postgres(self, events: list[UsageEvent]) -> int:
        now = datetime.now(UTC)
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            pg: asyncpg.Connection = raw.driver_connection
            async with pg.transaction():
                rows = await pg.fetch(PG_INSERT_EVENTS, *event_columns(events), now)
                if not rows:
                    return 0
                fresh = {r[0] for r in rows}
                new = [e for e in events if e.event_id in fresh]
                await pg.execute(PG_UPSERT_BUCKETS, *bucket_columns(new))
        return len(fresh)

    async def _insert_new(self, conn: AsyncConnection, events: list[UsageEvent]) -> set[str]:
        now = datetime.now(UTC)
        fresh: set[str] = set()
        for i in range(0, len(events), _CHUNK):
            rows = [event_row(e, now) for e in events[i : i + _CHUNK]]
            stmt = (
                self._dialect.insert(usage_events)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(usage_events.c.event_id)
            )
            fresh.update((await conn.execute(stmt)).scalars())
        return fresh

    async def _add_to_buckets(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        for i in range(0, len(rows), _CHUNK):
            stmt = self._dialect.insert(usage_buckets).values(rows[i : i + _CHUNK])
            excluded = stmt.excluded
            stmt = stmt.on_conflict_do_update(
                index_elements=list(BUCKET_KEY),
                set_={c: usage_buckets.c[c] + excluded[c] for c in COUNTERS},
            )
            await conn.execute(stmt)

    async def usage(
        self,
        tenant_id: str | None,
        start: datetime,
        end: datetime,
        granularity: Granularity = Granularity.HOUR,
    ) -> UsageReport:
        """Buckets starting in [start, end) (bucket-aligned: a partial first bucket is
        included whole), per model and adapter, and their total; all tenants when
        `tenant_id` is None (operators)."""
        if end <= start:
            raise InvalidRequestError("end must be after start")
        first = truncate(start, granularity)
        columns = [func.sum(usage_buckets.c[c]).label(c) for c in COUNTERS]
        query = (
            select(
                usage_buckets.c.bucket_start,
                usage_buckets.c.model,
                usage_buckets.c.adapter,
                *columns,
            )
            .where(usage_buckets.c.granularity == granularity.stored)
            .where(usage_buckets.c.bucket_start >= first)
            .where(usage_buckets.c.bucket_start < end)
            .group_by(usage_buckets.c.bucket_start, usage_buckets.c.model, usage_buckets.c.adapter)
        )
        if tenant_id is not None:
            query = query.where(usage_buckets.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        merged: dict[tuple[datetime, str, str], UsageBucket] = {}
        total = Counters()
        for row in rows:
            stored_start = row.bucket_start
            if stored_start.tzinfo is None:
                stored_start = stored_start.replace(tzinfo=UTC)
            key = (truncate(stored_start, granularity), row.model, row.adapter)
            bucket = merged.get(key)
            if bucket is None:
                bucket = merged[key] = UsageBucket(*key)
            counters = _counters(row)
            bucket.counters.add(counters)
            total.add(counters)
        buckets = sorted(merged.values(), key=lambda b: (b.start, b.model, b.adapter))
        return UsageReport(tenant_id or "*", first, end, granularity, buckets, total)

    async def totals(self, tenant_id: str, since: datetime) -> Counters:
        """One tenant's sums over the hour buckets from `since` (an hour boundary)."""
        columns = [func.sum(usage_buckets.c[c]).label(c) for c in COUNTERS]
        query = (
            select(*columns)
            .where(usage_buckets.c.tenant_id == tenant_id)
            .where(usage_buckets.c.granularity == "hour")
            .where(usage_buckets.c.bucket_start >= since)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return _counters(row)

    async def event_ids(
        self, start: datetime, end: datetime, tenant_id: str | None = None
    ) -> set[str]:
        """Ids of the metered events that ended in [start, end)."""
        query = (
            select(usage_events.c.event_id)
            .where(usage_events.c.ended_at >= start)
            .where(usage_events.c.ended_at < end)
        )
        if tenant_id is not None:
            query = query.where(usage_events.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def count_events(self, tenant_id: str | None = None) -> int:
        query = select(func.count()).select_from(usage_events)
        if tenant_id is not None:
            query = query.where(usage_events.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
