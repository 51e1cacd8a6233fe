"""Usage events for the metering and billing tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tenantserve.metering.events import UsageEvent, UsageStatus
from tenantserve.metering.store import UsageStore
from tenantserve.storage.database import create_engine
from tenantserve.storage.migrations import migrate


def usage_event(
    n: int,
    ended_at: float = 1_795_000_000.0,
    tenant_id: str | None = None,
    **fields: Any,
) -> UsageEvent:
    """Request `req_<n>`'s event: 10 input tokens (2 cached), 5 output, completed."""
    values: dict[str, Any] = {
        "tenant_id": tenant_id or f"ten_{n % 3}",
        "model": "smol@1.0.0",
        "adapter": "",
        "pool": "shared",
        "region": "us",
        "tier": "standard",
        "status": UsageStatus.COMPLETED,
        "input_tokens": 10,
        "cached_input_tokens": 2,
        "output_tokens": 5,
        "started_at": ended_at - 1.0,
        "first_token_at": ended_at - 0.5,
        "ended_at": ended_at,
        "engine_seconds": 0.25,
    }
    values.update(fields)
    return UsageEvent.for_request(f"req_{n}", **values)


@asynccontextmanager
async def sqlite_usage_store(directory: Path) -> AsyncIterator[UsageStore]:
    """A migrated usage store in a SQLite file under `directory`."""
    url = f"sqlite+aiosqlite:///{directory / 'usage.db'}"
    await migrate(url)
    engine = create_engine(url)
    try:
        yield UsageStore(engine)
    finally:
        await engine.dispose()
