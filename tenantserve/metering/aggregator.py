"""`Aggregator`: counts the usage stream into the usage store, exactly once.

    fetch up to `batch` messages (durable pull consumer, explicit ack)
      → decode every event → store.apply(events)   [ONE transaction: ledger + buckets]
      → ack every message                           [only after the commit]

`run_forever` fetches and decodes the next batch while the database commits the current
one (the two stages overlap on two cores; one transaction is in flight at a time).

A crash (or a lost database connection) between the commit and the acks redelivers the
messages after `ack_wait_s`; the ledger has their event ids, so they add nothing. A batch
that fails to commit is nak'ed (redelivered after a back-off) and nothing of it counts.

A message that cannot be decoded is terminated (`term`: never redelivered) and logged:
it must not block the stream. So is one whose events the database rejects (a field too
long for its column): when a batch is rejected, its messages are applied one by one to
find the culprit, and the others still count.

Several aggregators may share the durable consumer (work sharing): the server hands
each message to one of them at a time, and the ledger settles the rare overlap after an
ack timeout. `max_ack_pending` bounds the messages out unacked across all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tenantserve.errors import InvalidRequestError
from tenantserve.metering.events import UsageEvent, decode_batch
from tenantserve.metering.store import UsageStore
from tenantserve.metering.stream import UsageStream, close_quietly, connect, ensure_stream

logger = logging.getLogger(__name__)

DURABLE = "tenantserve-aggregator"
_MAX_BACKOFF_S = 2.0


class Aggregator:
    """One worker of the durable consumer `durable` on the usage stream."""

    def __init__(
        self,
        nats_url: str,
        store: UsageStore,
        stream: UsageStream | None = None,
        durable: str = DURABLE,
        batch: int = 64,
        fetch_timeout_s: float = 0.5,
        ack_wait_s: float = 30.0,
        max_ack_pending: int = 4_096,
        name: str = "tenantserve-aggregator",
    ) -> None:
        self.nats_url = nats_url
        self.store = store
        self.stream = stream or UsageStream()
        self.durable = durable
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self.name = name
        self.counted = 0  # events new to the ledger since start
        self.terminated = 0  # messages dropped as malformed
        self._nc: NATS | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Connect, make sure the stream and the durable consumer exist, and bind to it
        (on failure the connection is closed again, so `start` can be retried)."""
        nc = await connect(self.nats_url, self.name)
        try:
            await self._bind(nc.jetstream())
        except BaseException:
            await close_quietly(nc)
            raise
        self._nc = nc

    async def _bind(self, js: JetStreamContext) -> None:
        """Create the stream and the durable consumer where missing; subscribe to it."""
        await ensure_stream(js, self.stream)
        config = ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,  # never give up on a message: each holds billable usage
            max_ack_pending=self.max_ack_pending,
            max_waiting=512,
        )
        self._sub = await js.pull_subscribe(
            self.stream.subjects, durable=self.durable, stream=self.stream.name, config=config
        )

    async def aggregate_once(self, timeout_s: float | None = None) -> int:
        """Fetch one batch (waiting up to `timeout_s` for the first message), count it
        and ack it; how many events were new. Raises when the batch could not be
        committed (its messages are nak'ed)."""
        return await self._commit(await self._fetch(timeout_s or self.fetch_timeout_s))

    async def run_forever(self) -> None:
        """Aggregate until `close()`, decoding the next batch while the database commits
        the last one (one transaction in flight). Failures are logged and retried with a
        back-off (the failed batch is redelivered)."""
        backoff_s = 0.0
        committing: asyncio.Task[int] | None = None
        while not self._stopping.is_set():
            try:
                batch = await self._fetch(self.fetch_timeout_s)
                if committing is not None:
                    task, committing = committing, None
                    try:
                        await task
                    except BaseException:
                        await self._nak([msg for msg, _ in batch])
                        raise
                if batch:
                    committing = asyncio.create_task(self._commit(batch))
                backoff_s = 0.0
            except Exception as e:
                backoff_s = min(_MAX_BACKOFF_S, max(0.05, backoff_s * 2))
                logger.warning("aggregation failed (retrying in %.2f s): %r", backoff_s, e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff_s)
        if committing is not None:
            with contextlib.suppress(Exception):
                await committing

    async def _fetch(self, timeout_s: float) -> list[tuple[Msg, list[UsageEvent]]]:
        """Up to `batch` messages and their events (malformed ones terminated)."""
        if self._sub is None:
            raise RuntimeError("Aggregator.start() was not called")
        try:
            msgs = await self._sub.fetch(self.batch, timeout=timeout_s)
        except TimeoutError:
            return []
        decoded: list[tuple[Msg, list[UsageEvent]]] = []
        for msg in msgs:
            events = await self._decode(msg)
            if events is not None:
                decoded.append((msg, events))
        return decoded

    async def _commit(self, decoded: list[tuple[Msg, list[UsageEvent]]]) -> int:
        """Count the batch in one transaction, then ack it; how many events were new."""
        if not decoded:
            return 0
        to_ack = [msg for msg, _ in decoded]
        try:
            counted = await self.store.apply([e for _, events in decoded for e in events])
        except InvalidRequestError as e:  # some message's data: find it, count the rest
            logger.warning("batch of %d messages rejected (%s); one by one", len(decoded), e)
            counted, to_ack = await self._apply_each(decoded)
        except BaseException:
            await self._nak(to_ack)
            raise
        for msg in to_ack:
            await msg.ack()
        self.counted += counted
        return counted

    async def close(self) -> None:
        """Stop `run_forever` and close the connection (unacked messages are redelivered
        to another worker after `ack_wait_s`)."""
        self._stopping.set()
        if self._nc is not None:
            await close_quietly(self._nc)

    async def _decode(self, msg: Msg) -> list[UsageEvent] | None:
        """The message's events; None (and the message terminated) when malformed."""
        try:
            events = decode_batch(msg.data)
        except InvalidRequestError as e:
            await self._term(msg, str(e))
            return None
        if not events:
            await self._term(msg, "no events")
            return None
        return events

    async def _apply_each(
        self, decoded: list[tuple[Msg, list[UsageEvent]]]
    ) -> tuple[int, list[Msg]]:
        """Apply message by message, terminating those the database rejects; how many
        events were new and the messages to ack."""
        counted = 0
        committed: list[Msg] = []
        for i, (msg, events) in enumerate(decoded):
            try:
                counted += await self.store.apply(events)
            except InvalidRequestError as e:
                await self._term(msg, str(e))
                continue
            except BaseException:
                await self._nak([m for m, _ in decoded[i:]])
                for m in committed:
                    await m.ack()
                raise
            committed.append(msg)
        return counted, committed

    async def _term(self, msg: Msg, reason: str) -> None:
        self.terminated += 1
        logger.error(
            "dropping malformed usage message %s (stream seq %s): %s",
            msg.subject,
            msg.metadata.sequence.stream if msg.reply else "?",
            reason,
        )
        await msg.term()

    async def _nak(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
