"""The bucket increments `UsageStore.apply` writes: the sums of `Counters.add_event`."""

from __future__ import annotations

import random
from typing import Any

from tenantserve.metering.events import UsageEvent, UsageStatus
from tenantserve.metering.report import Counters, Granularity, truncate
from tenantserve.metering.rows import bucket_rows
from tests.helpers.usage import usage_event


def _reference(events: list[UsageEvent]) -> list[dict[str, Any]]:
    sums: dict[tuple[Any, ...], Counters] = {}
    for e in events:
        for g in (Granularity.MINUTE, Granularity.HOUR):
            key = (e.tenant_id, g.value, truncate(e.ended, g), e.model, e.adapter, e.tier)
            sums.setdefault(key, Counters()).add_event(e)
    names = ("tenant_id", "granularity", "bucket_start", "model", "adapter", "tier")
    return [{**dict(zip(names, k, strict=True)), **vars(c)} for k, c in sorted(sums.items())]


def test_bucket_rows_sum_each_event_into_its_minute_and_hour_in_key_order() -> None:
    rnd = random.Random(7)
    events = [
        usage_event(
            i,
            ended_at=1_795_000_000.0 + rnd.uniform(0, 3 * 3600),
            tenant_id=f"ten_{rnd.randrange(4)}",
            model=rnd.choice(["a@1", "b@2"]),
            adapter=rnd.choice(["", "ten_1/x@1"]),
            tier=rnd.choice(["free", "premium"]),
            status=rnd.choice(list(UsageStatus)),
            output_tokens=rnd.randrange(3),
            engine_seconds=rnd.random(),
        )
        for i in range(2_000)
    ]
    rows = bucket_rows(events)
    assert rows == _reference(events)
    assert sum(r["requests"] for r in rows if r["granularity"] == "hour") == 2_000
