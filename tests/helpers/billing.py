"""Billing test helpers: usage events to meter, and a settable clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from tenantserve.metering.events import UsageEvent, UsageStatus

_request_ids = itertools.count(1)


class Clock:
    """A settable UTC clock."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 10, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def usage_event(
    tenant_id: str,
    ended: datetime,
    *,
    model: str = "smollm2@1",
    adapter: str = "",
    tier: str = "standard",
    status: UsageStatus = UsageStatus.COMPLETED,
    input_tokens: int = 1_000,
    cached_input_tokens: int = 0,
    output_tokens: int = 500,
    duration_s: float = 2.0,
    engine_seconds: float = 0.5,
) -> UsageEvent:
    """One finished request of `tenant_id` that ended at `ended`."""
    end = ended.timestamp()
    return UsageEvent.for_request(
        f"req_test_{next(_request_ids):08d}_{int(end * 1000)}",
        tenant_id=tenant_id,
        model=model,
        adapter=adapter,
        pool="shared",
        region="us",
        tier=tier,
        status=status,
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
        started_at=end - duration_s,
        first_token_at=end - duration_s / 2,
        ended_at=end,
        engine_seconds=engine_seconds,
    )
