"""`Meter`: the gateway's side of metering — one `UsageEvent` per request, durably in the
outbox before the request is considered done.

The embedded pipeline (`OutboxDrain`) or the shipper (JetStream) takes it from there.
An outbox that cannot be written is the one failure that loses money: it is logged at
ERROR with the whole event (the request log carries it too, so `tenantserve usage
reconcile` re-emits it) and counted in `failed_writes`.
"""

from __future__ import annotations

import logging

from tenantserve.metering.events import UsageEvent
from tenantserve.metering.outbox import Outbox

logger = logging.getLogger(__name__)


class Meter:
    """Writes usage events to the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.recorded = 0
        self.failed_writes = 0

    async def record(self, event: UsageEvent) -> bool:
        """Store `event` durably; False (logged) when the outbox could not take it."""
        try:
            await self.outbox.append(event)
        except Exception:
            self.failed_writes += 1
            logger.exception("usage event not written to the outbox: %s", event.to_json())
            return False
        self.recorded += 1
        return True

    def close(self) -> None:
        self.outbox.close()
