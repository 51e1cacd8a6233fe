"""`Shipper`: drains the outbox into the usage stream.

    read a batch (oldest first) → group by tenant → chunk → publish every message at once
                                → await all the acks → delete the acked rows

One message per (tenant, chunk of up to `max_events_per_message` events), body the
events' JSON lines (`encode_batch`; the outbox already holds each event's JSON, so the
lines are joined, not re-encoded). Publishing one message per event tops out near 15k
messages/s in nats-py on this machine; batching makes the per-message cost small.
The messages of a round are published without waiting (`publish_async`) and their acks
collected together, so a round costs one round trip, not one per message.

A row leaves the outbox only after the server acknowledged the message holding it, i.e.
it is stored in the stream. A failed or timed-out publish leaves its rows for the next
round (after a back-off); the rows of the messages acked in that round are deleted. A
crash between the ack and the delete re-sends those rows: within the stream's duplicate
window the server drops them (same msg id when the batch is re-read the same way), and
the aggregator's ledger counts them once in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck

from tenantserve.metering.outbox import Outbox, OutboxEntry
from tenantserve.metering.stream import (
    MSG_ID_HEADER,
    UsageStream,
    close_quietly,
    connect,
    ensure_stream,
)
from tenantserve.metering.stream import message_id as stream_message_id

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 512 * 1024  # well under the server's default 1 MiB max payload
_MAX_BACKOFF_S = 2.0


class Shipper:
    """One drainer of one outbox file into the stream."""

    def __init__(
        self,
        outbox: Outbox,
        nats_url: str,
        stream: UsageStream | None = None,
        batch_size: int = 8_192,
        max_events_per_message: int = 512,
        poll_interval_s: float = 0.02,
        ack_timeout_s: float = 10.0,
        name: str = "tenantserve-shipper",
    ) -> None:
        self.outbox = outbox
        self.nats_url = nats_url
        self.stream = stream or UsageStream()
        self.batch_size = batch_size
        self.max_events_per_message = max_events_per_message
        self.poll_interval_s = poll_interval_s
        self.ack_timeout_s = ack_timeout_s
        self.name = name
        self.shipped = 0  # events acked by the stream since start
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Connect and make sure the stream exists (on failure the connection is closed
        again, so `start` can be retried)."""
        nc = await connect(self.nats_url, self.name)
        try:
            js = nc.jetstream(publish_async_max_pending=16_384)
            await ensure_stream(js, self.stream)
        except BaseException:
            await close_quietly(nc)
            raise
        self._nc, self._js = nc, js

    async def ship_once(self) -> int:
        """Ship one batch of the oldest outbox rows; how many events the stream acked
        (their rows are deleted). Raises when nothing could be shipped."""
        if self._js is None:
            raise RuntimeError("Shipper.start() was not called")
        # On a thread: in `tenantserve up` this loop shares the gateway's event loop.
        entries = await asyncio.to_thread(self.outbox.read, self.batch_size)
        if not entries:
            return 0
        messages = split_messages(entries, self.max_events_per_message)
        acked, error = await self._publish(messages)
        await asyncio.to_thread(self.outbox.delete, [e.seq for batch in acked for e in batch])
        shipped = sum(len(batch) for batch in acked)
        self.shipped += shipped
        if error is not None:
            if not shipped:
                raise error
            logger.warning(
                "%d of %d messages not acked: %s", len(messages) - len(acked), len(messages), error
            )
        return shipped

    async def run_forever(self) -> None:
        """Ship until `close()`: at once while the outbox is backed up, else every
        `poll_interval_s` or as soon as this process appends. Errors are logged and
        retried with a back-off; the rows wait in the outbox meanwhile."""
        backoff_s = 0.0
        while not self._stopping.is_set():
            self.outbox.appended.clear()
            try:
                shipped = await self.ship_once()
                backoff_s = 0.0
            except Exception as e:
                backoff_s = min(_MAX_BACKOFF_S, max(0.05, backoff_s * 2))
                logger.warning("shipping failed (retrying in %.2f s): %r", backoff_s, e)
                await self._sleep(backoff_s)
                continue
            if shipped < self.batch_size:
                await self._wait_for_appends()

    async def close(self) -> None:
        """Stop `run_forever` and close the connection (unshipped rows stay in the outbox)."""
        self._stopping.set()
        if self._nc is not None:
            await close_quietly(self._nc)

    async def _publish(
        self, messages: list[list[OutboxEntry]]
    ) -> tuple[list[list[OutboxEntry]], BaseException | None]:
        """Publish every message, then wait for the acks; the messages the stream acked
        and the first error (None when all were acked)."""
        assert self._js is not None
        futures: list[asyncio.Future[PubAck]] = []
        error: BaseException | None = None
        for batch in messages:
            headers = {MSG_ID_HEADER: stream_message_id(e.event_id for e in batch)}
            body = b"\n".join(e.body for e in batch)
            try:
                future = await self._js.publish_async(
                    self.stream.subject(batch[0].tenant_id),
                    body,
                    wait_stall=self.ack_timeout_s,
                    stream=self.stream.name,
                    headers=headers,
                )
            except Exception as e:
                error = e
                break
            futures.append(future)
        if futures:
            # publish_async's futures never time out by themselves (a lost connection
            # would leave them pending), so the round has a deadline.
            _, pending = await asyncio.wait(futures, timeout=self.ack_timeout_s)
            for future in pending:
                future.cancel()
            if pending and error is None:
                error = TimeoutError(f"{len(pending)} publish acks not received in time")
        acked: list[list[OutboxEntry]] = []
        for batch, future in zip(messages, futures, strict=False):
            if future.cancelled():
                continue
            if future.exception() is not None:
                error = error or future.exception()
                continue
            acked.append(batch)
        return acked, error

    async def _wait_for_appends(self) -> None:
        """Until this process appends to the outbox, `poll_interval_s` passes (appends
        by other processes are seen at the next poll) or `close()` is called."""
        if self.outbox.appended.is_set():
            return
        await asyncio.to_thread(self.outbox.appended.wait, self.poll_interval_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def split_messages(
    entries: list[OutboxEntry], max_events: int, max_bytes: int = MAX_MESSAGE_BYTES
) -> list[list[OutboxEntry]]:
    """The entries as message contents: one tenant per message, outbox order within a
    tenant, at most `max_events` events and about `max_bytes` of body each (a single
    larger event still gets a message)."""
    by_tenant: dict[str, list[OutboxEntry]] = defaultdict(list)
    for e in entries:
        by_tenant[e.tenant_id].append(e)
    messages: list[list[OutboxEntry]] = []
    for tenant_entries in by_tenant.values():
        chunk: list[OutboxEntry] = []
        size = 0
        for e in tenant_entries:
            if chunk and (len(chunk) >= max_events or size + len(e.body) > max_bytes):
                messages.append(chunk)
                chunk, size = [], 0
            chunk.append(e)
            size += len(e.body) + 1  # and its newline
        messages.append(chunk)
    return messages
