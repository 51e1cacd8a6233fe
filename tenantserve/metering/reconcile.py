"""Reconciliation: the gateway's request log against the metered usage.

    tenantserve usage reconcile --start --end [--tenant] [--dry-run]

Every request record carries its usage event (`gateway/request_log.py`). For a window,
compare the events the log holds with the processed-event ledger:

    missing     logged, never counted (the pipeline lost it: a disk, a bug, a purge)
    mismatched  counted with other numbers than the log's (never expected; reported)
    unlogged    counted, not in the log (log files lost or not given; reported)

then re-emit the missing events (unless --dry-run): into the outbox, where the running
pipeline picks them up, and — in the embedded deployment — straight into the store as
well. Both are idempotent (the ledger counts an event id once), so reconciliation may
run any number of times, concurrently with traffic; a second run finds nothing.

This is the procedure for "the pipeline lost 6 hours of events for 3 tenants": run it
over those 6 hours (with `--log-dir` pointing at every gateway's request logs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from tenantserve.metering.events import UsageEvent
from tenantserve.metering.outbox import Outbox
from tenantserve.metering.store import UsageStore
from tenantserve.metering.tables import usage_events

# Fields compared between the log's event and the ledger's.
_COMPARED = ("tenant_id", "model", "adapter", "status", "input_tokens", "output_tokens")
_CHUNK = 500


@dataclass
class ReconcileReport:
    start: datetime
    end: datetime
    tenant_id: str | None
    logged: int = 0
    counted: int = 0
    missing: list[UsageEvent] = field(default_factory=list)
    mismatched: list[tuple[UsageEvent, dict[str, Any]]] = field(default_factory=list)
    unlogged: int = 0
    reemitted: int = 0
    applied: int = 0

    @property
    def clean(self) -> bool:
        return not self.missing and not self.mismatched

    def missing_by_tenant(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = {}
        for e in self.missing:
            c = out.setdefault(e.tenant_id, Counter())
            c["requests"] += 1
            c["input_tokens"] += e.billable_input_tokens
            c["output_tokens"] += e.billable_output_tokens
        return {tenant: dict(c) for tenant, c in sorted(out.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "tenant_id": self.tenant_id,
            "logged": self.logged,
            "counted": self.counted,
            "missing": len(self.missing),
            "missing_by_tenant": self.missing_by_tenant(),
            "mismatched": [
                {"event_id": e.event_id, "request_id": e.request_id, "counted": counted}
                for e, counted in self.mismatched
            ],
            "unlogged": self.unlogged,
            "reemitted": self.reemitted,
            "applied": self.applied,
        }


async def reconcile(
    logged: Iterable[UsageEvent],
    store: UsageStore,
    start: datetime,
    end: datetime,
    tenant_id: str | None = None,
    outbox: Outbox | None = None,
    apply: bool = False,
    dry_run: bool = False,
) -> ReconcileReport:
    """Compare `logged` (the request log's events in the window) with the ledger; re-emit
    what is missing to `outbox` and, when `apply`, into `store` directly."""
    report = ReconcileReport(start, end, tenant_id)
    by_id: dict[str, UsageEvent] = {}
    for e in logged:
        if tenant_id is None or e.tenant_id == tenant_id:
            by_id[e.event_id] = e
    report.logged = len(by_id)
    counted = await store.event_ids(start, end, tenant_id)
    report.counted = len(counted)
    report.unlogged = len(counted - by_id.keys())
    report.missing = sorted(
        (e for i, e in by_id.items() if i not in counted), key=lambda e: e.ended_at
    )
    both = sorted(by_id.keys() & counted)
    for i in range(0, len(both), _CHUNK):
        rows = await _ledger_rows(store, both[i : i + _CHUNK])
        for row in rows:
            event = by_id[row["event_id"]]
            if any(getattr(event, f) != row[f] for f in _COMPARED):
                report.mismatched.append((event, row))
    if dry_run or not report.missing:
        return report
    if outbox is not None:
        await outbox.append_many(report.missing)
        report.reemitted = len(report.missing)
    if apply:
        report.applied = await store.apply(report.missing)
    return report


async def _ledger_rows(store: UsageStore, event_ids: list[str]) -> list[dict[str, Any]]:
    columns = [usage_events.c.event_id, *(usage_events.c[f] for f in _COMPARED)]
    query = select(*columns).where(usage_events.c.event_id.in_(event_ids))
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [dict(r) for r in rows]
