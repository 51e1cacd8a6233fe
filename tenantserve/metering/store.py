"""`UsageStore`: the processed-event ledger and the per-tenant usage buckets.

    apply(events)      in ONE transaction: insert the events not seen before into the
                       ledger (`usage_events`, keyed by event id), add exactly those to
                       their minute and hour buckets; returns how many were new
    usage(...)         a tenant's buckets (minute / hour / day / month) and the total
    totals(...)        one tenant's sums since a time (quota periods)
    event_ids(...)     the metered event ids in a window (reconciliation)

Deduplication is the ledger's primary key: an event arriving twice (redelivered by the
stream, re-shipped from the outbox after a crash, re-emitted by reconciliation) adds
nothing the second time, on SQLite and PostgreSQL alike. Bucket rows are written in key
order, so concurrent aggregators never deadlock on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantserve.errors import InvalidRequestError
from tenantserve.metering.events import UsageEvent, UsageStatus
from tenantserve.metering.tables import usage_buckets, usage_events

COUNTERS = (
    "requests",
    "errors",
    "cancelled",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "engine_seconds",
)
_KEY = ("tenant_id", "granularity", "bucket_start", "model", "adapter", "tier")
# Rows per INSERT statement (SQLite allows 32,766 bound parameters; 18 columns each).
_CHUNK = 1_000


class Granularity(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"

    @property
    def stored(self) -> str:
        """The bucket table it is read from (days and months sum hours)."""
        return "minute" if self is Granularity.MINUTE else "hour"


def truncate(t: datetime, granularity: Granularity) -> datetime:
    """The start of the UTC bucket of `granularity` containing `t`."""
    t = t.astimezone(UTC)
    if granularity is Granularity.MINUTE:
        return t.replace(second=0, microsecond=0)
    if granularity is Granularity.HOUR:
        return t.replace(minute=0, second=0, microsecond=0)
    if granularity is Granularity.DAY:
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Counters:
    requests: int = 0
    errors: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    engine_seconds: float = 0.0

    def add_event(self, e: UsageEvent) -> None:
        self.requests += 1
        self.errors += e.status is UsageStatus.ERROR
        self.cancelled += e.status is UsageStatus.CANCELLED
        self.input_tokens += e.billable_input_tokens
        self.cached_input_tokens += e.billable_cached_input_tokens
        self.output_tokens += e.billable_output_tokens
        self.engine_seconds += e.engine_seconds

    def add(self, other: Counters) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        out["engine_seconds"] = round(self.engine_seconds, 6)
        return out


@dataclass
class UsageBucket:
    start: datetime
    model: str
    adapter: str
    counters: Counters = field(default_factory=Counters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "model": self.model,
            "adapter": self.adapter or None,
            **self.counters.to_dict(),
        }


@dataclass
class UsageReport:
    tenant_id: str
    start: datetime
    end: datetime
    granularity: Granularity
    buckets: list[UsageBucket]
    total: Counters

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "usage",
            "tenant_id": self.tenant_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "granularity": self.granularity.value,
            "data": [b.to_dict() for b in self.buckets],
            "total": self.total.to_dict(),
        }


def bucket_rows(events: Iterable[UsageEvent]) -> list[dict[str, Any]]:
    """The minute and hour bucket increments of `events`, one row per key, in key order."""
    sums: dict[tuple[str, str, datetime, str, str, str], Counters] = {}
    for e in events:
        ended = e.ended
        for granularity in (Granularity.MINUTE, Granularity.HOUR):
            start = truncate(ended, granularity)
            key = (e.tenant_id, granularity.value, start, e.model, e.adapter, e.tier)
            counters = sums.get(key)
            if counters is None:
                counters = sums[key] = Counters()
            counters.add_event(e)
    return [
        {**dict(zip(_KEY, key, strict=True)), **vars(counters)}
        for key, counters in sorted(sums.items(), key=lambda kv: kv[0])
    ]


def _counters(row: Any) -> Counters:
    """Counters from a row of sums (PostgreSQL sums integers as Decimal; NULL: none)."""
    values: dict[str, Any] = {c: int(getattr(row, c) or 0) for c in COUNTERS}
    values["engine_seconds"] = float(row.engine_seconds or 0.0)
    return Counters(**values)


def _event_row(e: UsageEvent, now: datetime) -> dict[str, Any]:
    row = e.to_dict()
    row["started_at"] = datetime.fromtimestamp(e.started_at, UTC)
    row["first_token_at"] = (
        None if e.first_token_at is None else datetime.fromtimestamp(e.first_token_at, UTC)
    )
    row["ended_at"] = e.ended
    row["recorded_at"] = now
    return row


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
        async with self.engine.begin() as conn:
            fresh = await self._insert_new(conn, unique)
            if fresh:
                new = [e for e in unique if e.event_id in fresh]
                await self._add_to_buckets(conn, bucket_rows(new))
        return len(fresh)

    async def _insert_new(self, conn: AsyncConnection, events: list[UsageEvent]) -> set[str]:
        now = datetime.now(UTC)
        fresh: set[str] = set()
        # Ledger rows in event-id order: concurrent aggregators lock them in one order.
        events.sort(key=lambda e: e.event_id)
        for i in range(0, len(events), _CHUNK):
            rows = [_event_row(e, now) for e in events[i : i + _CHUNK]]
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
                index_elements=list(_KEY),
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


def period_start(now: datetime, days: int = 0) -> datetime:
    """Helper for quota periods: the UTC day (days=1) or month (days=0) containing now."""
    if days:
        return truncate(now, Granularity.DAY) - timedelta(days=days - 1)
    return truncate(now, Granularity.MONTH)
