"""`RequestRecordStore`: the request records in and out of `request_records`.

    insert(records)        one INSERT for a batch (a request id already stored is skipped)
    get(id, tenant)        one record as JSON; with `tenant`, only that tenant's
    page(...)              a tenant's (or everyone's) records, newest first, with a cursor
    delete_before(t)       retention
    window_counts(since)   per (tenant, tier) counts the SLO evaluator reads
    ttft_samples(...)      the newest TTFTs of a tenant, with their start times

Records come back as the JSON of the API (`record_json`); content fields only when stored.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantserve.errors import InvalidRequestError
from tenantserve.gateway.request_log import RequestRecord
from tenantserve.observability.record_tables import request_records as t

STATUSES = ("completed", "cancelled", "error", "rejected")
_CHUNK = 500  # rows per INSERT (SQLite's bound-parameter limit: 26 columns each)


@dataclass(frozen=True)
class RecordPage:
    """Records newest first; `next_cursor` reads the page after (None: no more)."""

    data: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class WindowCounts:
    """One tenant's requests of one tier in a window: `eligible` counts toward
    availability (client refusals, 4xx, do not), `failed` failed on our side; `timed`
    have a TTFT, `slow` of which above the tier's target."""

    tenant_id: str
    tier: str
    eligible: int
    failed: int
    timed: int
    slow: int


def _utc(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def record_row(record: RequestRecord) -> dict[str, Any]:
    """The table row of a record."""
    usage = record.usage
    started = record.started_at or (usage.started_at if usage is not None else 0.0)
    ended = usage.ended_at if usage is not None else started + record.total_ms / 1000
    return {
        "request_id": record.request_id,
        "tenant_id": record.tenant_id,
        "tier": record.tier,
        "started_at": _utc(started),
        "ended_at": _utc(ended),
        "status": record.status,
        "http_status": record.http_status,
        "error_code": record.error_code,
        "failed": record.failed,
        "model": record.model,
        "adapter": record.adapter or (usage.adapter if usage is not None else ""),
        "pool": record.pool,
        "region": record.region or (usage.region if usage is not None else ""),
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cached_tokens": record.cached_tokens,
        "admission_ms": record.admission_ms,
        "queue_ms": record.queue_ms,
        "engine_queue_ms": record.engine_queue_ms,
        "adapter_wait_ms": record.adapter_wait_ms,
        "ttft_ms": record.ttft_ms,
        "total_ms": record.total_ms,
        "engine_seconds": usage.engine_seconds if usage is not None else 0.0,
        "preemptions": record.preemptions,
        "prompt_text": record.prompt_text,
        "completion_text": record.completion_text,
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def record_json(row: RowMapping) -> dict[str, Any]:
    """A stored record as the API shows it."""
    out: dict[str, Any] = {
        "object": "request",
        "id": row["request_id"],
        "tenant_id": row["tenant_id"],
        "tier": row["tier"],
        "started_at": row["started_at"].isoformat(),
        "ended_at": row["ended_at"].isoformat(),
        "status": row["status"],
        "http_status": row["http_status"],
        "error_code": row["error_code"],
        "failed": bool(row["failed"]),
        "model": row["model"],
        "adapter": row["adapter"],
        "pool": row["pool"],
        "region": row["region"],
        "usage": {
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "cached_tokens": row["cached_tokens"],
        },
        "timings": {
            "admission_ms": _ms(row["admission_ms"]),
            "queue_ms": _ms(row["queue_ms"]),
            "engine_queue_ms": _ms(row["engine_queue_ms"]),
            "adapter_wait_ms": _ms(row["adapter_wait_ms"]),
            "ttft_ms": _ms(row["ttft_ms"]),
            "total_ms": _ms(row["total_ms"]),
        },
        "engine_seconds": round(row["engine_seconds"], 6),
        "preemptions": row["preemptions"],
    }
    if row["prompt_text"] is not None or row["completion_text"] is not None:
        out["content"] = {"prompt": row["prompt_text"], "completion": row["completion_text"]}
    return out


def encode_cursor(started_at: datetime, request_id: str) -> str:
    raw = f"{started_at.astimezone(UTC).isoformat()}|{request_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (started_at, request_id) a cursor points after; InvalidRequestError if forged."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, request_id = raw.split("|", 1)
        return datetime.fromisoformat(when), request_id
    except ValueError:
        raise InvalidRequestError("cursor is not one this API returned") from None


class RequestRecordStore:
    """The request records of every tenant; each method is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, records: Sequence[RequestRecord]) -> int:
        """Store the records (ids already stored are skipped); returns how many were given."""
        if not records:
            return 0
        rows = [record_row(r) for r in records]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        async with self.engine.begin() as conn:
            for i in range(0, len(rows), _CHUNK):
                chunk = rows[i : i + _CHUNK]
                await conn.execute(dialect.insert(t).values(chunk).on_conflict_do_nothing())
        return len(rows)

    async def get(self, request_id: str, tenant_id: str | None = None) -> dict[str, Any] | None:
        """The record, or None (also when it is another tenant's than `tenant_id`)."""
        query = select(t).where(t.c.request_id == request_id)
        if tenant_id is not None:
            query = query.where(t.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return record_json(row) if row is not None else None

    async def page(
        self,
        tenant_id: str | None,
        start: datetime | None = None,
        end: datetime | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RecordPage:
        """Records started in [start, end), newest first; `tenant_id` None: every tenant's."""
        if status is not None and status not in STATUSES:
            raise InvalidRequestError(f"status must be one of {', '.join(STATUSES)}")
        query = select(t)
        if tenant_id is not None:
            query = query.where(t.c.tenant_id == tenant_id)
        if start is not None:
            query = query.where(t.c.started_at >= start)
        if end is not None:
            query = query.where(t.c.started_at < end)
        if status is not None:
            query = query.where(t.c.status == status)
        if cursor is not None:
            after_t, after_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    t.c.started_at < after_t,
                    and_(t.c.started_at == after_t, t.c.request_id < after_id),
                )
            )
        query = query.order_by(t.c.started_at.desc(), t.c.request_id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = list((await conn.execute(query)).mappings())
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        next_cursor = encode_cursor(last["started_at"], last["request_id"]) if last else None
        return RecordPage([record_json(r) for r in rows], next_cursor)

    async def delete_before(self, cutoff: datetime) -> int:
        """Delete the records started before `cutoff`; returns how many."""
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(t).where(t.c.started_at < cutoff))
        return int(result.rowcount or 0)

    async def window_counts(
        self,
        since: datetime,
        ttft_targets_ms: Mapping[str, float],
        tenant_id: str | None = None,
    ) -> list[WindowCounts]:
        """Per (tenant, tier): the counts of the records started since `since`; a record is
        slow when its TTFT exceeds its tier's entry in `ttft_targets_ms`."""
        slow_when = [
            (and_(t.c.tier == tier, t.c.ttft_ms > target), 1)
            for tier, target in ttft_targets_ms.items()
        ]
        slow = case(*slow_when, else_=0) if slow_when else None
        client_refusal = and_(t.c.status == "rejected", t.c.failed.is_(False))
        columns = [
            t.c.tenant_id,
            t.c.tier,
            func.sum(case((client_refusal, 0), else_=1)),
            func.sum(case((t.c.failed.is_(True), 1), else_=0)),
            func.count(t.c.ttft_ms),
            func.sum(slow) if slow is not None else func.sum(0),
        ]
        query = select(*columns).where(t.c.started_at >= since)
        if tenant_id is not None:
            query = query.where(t.c.tenant_id == tenant_id)
        query = query.group_by(t.c.tenant_id, t.c.tier)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            WindowCounts(r[0], r[1], int(r[2] or 0), int(r[3] or 0), int(r[4] or 0), int(r[5] or 0))
            for r in rows
        ]

    async def ttft_samples(
        self, tenant_id: str, since: datetime, limit: int = 5000
    ) -> list[tuple[datetime, float]]:
        """The start times and TTFTs (ms) of the tenant's newest `limit` timed records
        since `since`, newest first."""
        query = (
            select(t.c.started_at, t.c.ttft_ms)
            .where(t.c.tenant_id == tenant_id, t.c.started_at >= since, t.c.ttft_ms.is_not(None))
            .order_by(t.c.started_at.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.started_at, float(row.ttft_ms)) for row in rows]
