"""Usage events as rows of the usage tables: what `UsageStore.apply` writes.

    bucket_rows         the minute and hour bucket increments of events, one row per key
    event_row           an event as a ledger (`usage_events`) row
    event_columns       events as one array per ledger column (PostgreSQL)
    bucket_columns      their bucket increments as one array per bucket column (PostgreSQL)
    PG_INSERT_EVENTS    the ledger insert from those arrays, returning the new event ids
    PG_UPSERT_BUCKETS   the bucket upsert from those arrays

Pure: rows, arrays and statement text; nothing here touches a database. Bucket rows and
arrays come in key order, so concurrent aggregators lock them in one order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from tenantserve.metering.events import UsageEvent, UsageStatus
from tenantserve.metering.report import COUNTERS

BUCKET_KEY = ("tenant_id", "granularity", "bucket_start", "model", "adapter", "tier")
_BucketKey = tuple[str, str, datetime, str, str, str]  # in `BUCKET_KEY` order


def bucket_rows(events: Iterable[UsageEvent]) -> list[dict[str, Any]]:
    """The minute and hour bucket increments of `events`, one row per key, in key order."""
    return [
        {**dict(zip(BUCKET_KEY, key, strict=True)), **dict(zip(COUNTERS, sums, strict=True))}
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


def event_row(e: UsageEvent, now: datetime) -> dict[str, Any]:
    """`e` as a ledger (`usage_events`) row recorded at `now`."""
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


PG_INSERT_EVENTS = (
    f"INSERT INTO usage_events ({', '.join(c for c, _ in _EVENT_COLUMNS)}, recorded_at) "
    "SELECT "
    + ", ".join(
        f"to_timestamp(u.{c})" if c in _TIME_COLUMNS else f"u.{c}" for c, _ in _EVENT_COLUMNS
    )
    + f", ${len(_EVENT_COLUMNS) + 1}::timestamptz "
    f"FROM {_unnest(_EVENT_COLUMNS)} AS u({', '.join(c for c, _ in _EVENT_COLUMNS)}) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
PG_UPSERT_BUCKETS = (
    f"INSERT INTO usage_buckets ({', '.join((*BUCKET_KEY, *COUNTERS))}) "
    f"SELECT * FROM {_unnest(_BUCKET_COLUMNS)} "
    f"ON CONFLICT ({', '.join(BUCKET_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = usage_buckets.{c} + excluded.{c}" for c in COUNTERS)
)


def event_columns(events: list[UsageEvent]) -> list[list[Any]]:
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


def bucket_columns(events: list[UsageEvent]) -> list[list[Any]]:
    """The buckets of `events` as one list per column of `_BUCKET_COLUMNS`, in key order."""
    sums = _bucket_sums(events)
    keys = [[key[i] for key, _ in sums] for i in range(len(BUCKET_KEY))]
    return keys + [[row[i] for _, row in sums] for i in range(len(COUNTERS))]
