"""`MeteringPipeline`: the metering parts one gateway process runs, from settings.

    embedded (no NATS URL)   outbox → OutboxDrain → usage store (the metadata database)
    JetStream (NATS URL)     outbox → Shipper → JetStream → Aggregator → usage store;
                             shipper and aggregator in process unless
                             `metering.run_pipeline` is off (then `tenantserve metering
                             ship` / `aggregate` run them as processes of their own)

Either way the gateway only ever writes to the outbox (`Meter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantserve.config import MeteringConfig
from tenantserve.metering.drain import OutboxDrain
from tenantserve.metering.meter import Meter
from tenantserve.metering.outbox import OUTBOX_FILE, Outbox
from tenantserve.metering.store import UsageStore
from tenantserve.metering.stream import UsageStream

logger = logging.getLogger(__name__)


class _Stage(Protocol):
    async def start(self) -> None: ...

    async def run_forever(self) -> None: ...

    async def close(self) -> None: ...


def usage_stream(config: MeteringConfig) -> UsageStream:
    """The configured stream, its subjects derived from its name."""
    prefix = config.stream.lower().replace("_", ".")
    return UsageStream(name=config.stream, subject_prefix=prefix)


class MeteringPipeline:
    def __init__(self, config: MeteringConfig, data_dir: Path, engine: AsyncEngine) -> None:
        self.config = config
        self.outbox = Outbox(data_dir / OUTBOX_FILE, config.outbox_synchronous)
        self.meter = Meter(self.outbox)
        self.store = UsageStore(engine)
        self.drain: OutboxDrain | None = None
        self._stages: list[_Stage] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def mode(self) -> str:
        return "jetstream" if self.config.nats_url else "embedded"

    async def start(self) -> None:
        """Start draining (what a previous run left in the outbox goes first)."""
        if self.config.nats_url is None:
            self.drain = OutboxDrain(self.outbox, self.store)
            self.drain.start()
            return
        if not self.config.run_pipeline:
            return
        from tenantserve.metering.aggregator import Aggregator
        from tenantserve.metering.shipper import Shipper

        stream = usage_stream(self.config)
        self._stages = [
            Shipper(self.outbox, self.config.nats_url, stream),
            Aggregator(self.config.nats_url, self.store, stream),
        ]
        for stage in self._stages:
            await stage.start()
            name = f"metering-{type(stage).__name__.lower()}"
            self._tasks.append(asyncio.create_task(stage.run_forever(), name=name))

    async def close(self) -> None:
        """Stop the stages (a last drain or ship first), then close the outbox."""
        if self.drain is not None:
            await self.drain.close()
        for stage in reversed(self._stages):
            try:
                await stage.close()
            except Exception:
                logger.exception("closing %s failed", type(stage).__name__)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.meter.close()
