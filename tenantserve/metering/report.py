"""The usage report vocabulary: granularities and their UTC bucket starts, the counters
summed per bucket, and the report `UsageStore.usage` returns.

    Granularity   minute / hour / day / month (days and months are summed from hours)
    truncate      the start of the UTC bucket containing a time
    Counters      requests, errors, cancelled, billable tokens, engine seconds
    UsageBucket   one bucket's counters per model and adapter
    UsageReport   a tenant's buckets over [start, end) and their total
    period_start  the UTC day or month containing a time (quota periods)

Plain dataclasses and pure functions; no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from tenantserve.metering.events import UsageEvent, UsageStatus

COUNTERS = (
    "requests",
    "errors",
    "cancelled",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "engine_seconds",
)


class Granularity(StrEnum):
    """The width of a usage bucket; days and months are summed from hour buckets."""

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
    """The sums of one bucket: requests, errors, cancelled, billable tokens, engine seconds."""

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
    """One bucket of a report: its start, model and adapter ("" for none), and counters."""

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
    """A tenant's buckets (`*`: all tenants) from `start` to `end` and their total."""

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


def period_start(now: datetime, days: int = 0) -> datetime:
    """Helper for quota periods: the UTC day (days=1) or month (days=0) containing now."""
    if days:
        return truncate(now, Granularity.DAY) - timedelta(days=days - 1)
    return truncate(now, Granularity.MONTH)
