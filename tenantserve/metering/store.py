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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
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


_BucketKey = tuple[str, str, datetime, str, str, str]  # in `_KEY` order


def bucket_rows(events: Iterable[UsageEvent]) -> list[dict[str, Any]]:
    """The minute and hour bucket increments of `events`, one row per key, in key order."""
    return [
        {**dict(zip(_KEY, key, strict=True)), **dict(zip(COUNTERS, sums, strict=True))}
        for key, sums in _bucket_sums(events)
    ]


def _bucket_sums(events: Iterable[UsageEvent]) -> list[tuple[_BucketKey, list[Any]]]:
    """`bucket_rows` as (key, sums in `COUNTERS` order) pairs, without the per-event
    objects (`Counters.add_event` is the reference; this is the aggregator's hot loop)."""
    sums: dict[_BucketKey, list[Any]] = {}
    error, cancelled = UsageStatus.ERROR, UsageStatus.CANCELLED
    for e in events:
        minute = e.ended.replace(second=0, microsecond=0)  # `ended` is UTC already
        hour = minute.replace(minute=0)
        status = e.status
        billed = status is not error or e.output_tokens > 0
        is_error = 1 if status is error else 0
        is_cancelled = 1 if status is cancelled else 0
        input_tokens = e.input_tokens if billed else 0
        cached_tokens = e.cached_input_tokens if billed else 0
        output_tokens = e.output_tokens if billed else 0
        for key in (
            (e.tenant_id, "minute", minute, e.model, e.adapter, e.tier),
            (e.tenant_id, "hour", hour, e.model, e.adapter, e.tier),
        ):
            row = sums.get(key)
            if row is None:
                sums[key] = [
                    1,
                    is_error,
                    is_cancelled,
                    input_tokens,
                    cached_tokens,
                    output_tokens,
                    e.engine_seconds,
                ]
            else:
                row[0] += 1
                row[1] += is_error
                row[2] += is_cancelled
                row[3] += input_tokens
                row[4] += cached_tokens
                row[5] += output_tokens
                row[6] += e.engine_seconds
    return sorted(sums.items(), key=lambda kv: kv[0])


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


_EVENT_COLUMNS = (
    ("event_id", "text"),
    ("request_id", "text"),
    ("tenant_id", "text"),
    ("model", "text"),
    ("adapter", "text"),
    ("pool", "text"),
    ("region", "text"),
    ("tier", "text"),
    ("status", "text"),
    ("input_tokens", "int8"),
    ("cached_input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("started_at", "float8"),  # Unix seconds, to_timestamp() in the statement
    ("first_token_at", "float8"),
    ("ended_at", "float8"),
    ("engine_seconds", "float8"),
)
_TIME_COLUMNS = ("started_at", "first_token_at", "ended_at")
_BUCKET_COLUMNS = (
    ("tenant_id", "text"),
    ("granularity", "text"),
    ("bucket_start", "timestamptz"),
    ("model", "text"),
    ("adapter", "text"),
    ("tier", "text"),
    ("requests", "int8"),
    ("errors", "int4"),
    ("cancelled", "int4"),
    ("input_tokens", "int8"),
    ("cached_input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("engine_seconds", "float8"),
)


def _unnest(columns: tuple[tuple[str, str], ...]) -> str:
    return "unnest(" + ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(columns, 1)) + ")"


_PG_INSERT_EVENTS = (
    f"INSERT INTO usage_events ({', '.join(c for c, _ in _EVENT_COLUMNS)}, recorded_at) "
    "SELECT "
    + ", ".join(
        f"to_timestamp(u.{c})" if c in _TIME_COLUMNS else f"u.{c}" for c, _ in _EVENT_COLUMNS
    )
    + f", ${len(_EVENT_COLUMNS) + 1}::timestamptz "
    f"FROM {_unnest(_EVENT_COLUMNS)} AS u({', '.join(c for c, _ in _EVENT_COLUMNS)}) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
_PG_UPSERT_BUCKETS = (
    f"INSERT INTO usage_buckets ({', '.join((*_KEY, *COUNTERS))}) "
    f"SELECT * FROM {_unnest(_BUCKET_COLUMNS)} "
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = usage_buckets.{c} + excluded.{c}" for c in COUNTERS)
)


def _event_columns(events: list[UsageEvent]) -> list[list[Any]]:
    """The events as one list per column of `_EVENT_COLUMNS` (asyncpg arrays)."""
    return [
        [e.event_id for e in events],
        [e.request_id for e in events],
        [e.tenant_id for e in events],
        [e.model for e in events],
        [e.adapter for e in events],
        [e.pool for e in events],
        [e.region for e in events],
        [e.tier for e in events],
        [e.status.value for e in events],
        [e.input_tokens for e in events],
        [e.cached_input_tokens for e in events],
        [e.output_tokens for e in events],
        [e.started_at for e in events],
        [e.first_token_at for e in events],
        [e.ended_at for e in events],
        [e.engine_seconds for e in events],
    ]


def _bucket_columns(events: list[UsageEvent]) -> list[list[Any]]:
    """The buckets of `events` as one list per column of `_BUCKET_COLUMNS`, in key order."""
    sums = _bucket_sums(events)
    keys = [[key[i] for key, _ in sums] for i in range(len(_KEY))]
    return keys + [[row[i] for _, row in sums] for i in range(len(COUNTERS))]


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
                rows = await pg.fetch(_PG_INSERT_EVENTS, *_event_columns(events), now)
                if not rows:
                    return 0
                fresh = {r[0] for r in rows}
                new = [e for e in events if e.event_id in fresh]
                await pg.execute(_PG_UPSERT_BUCKETS, *_bucket_columns(new))
        return len(fresh)

    async def _insert_new(self, conn: AsyncConnection, events: list[UsageEvent]) -> set[str]:
        now = datetime.now(UTC)
        fresh: set[str] = set()
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
