"""`UsageStream`: the JetStream stream between the shippers and the aggregators.

    stream   TENANTSERVE_USAGE, file storage, kept 7 days (replayable)
    subject  tenantserve.usage.<tenant>         one subject per tenant (partitioned)
    message  one or more events of ONE tenant   body: `encode_batch` (JSON lines)
    msg id   Nats-Msg-Id header                 the event id for a single event, else a
                                                digest of the message's sorted event ids

The server drops a message whose id it has seen within the duplicate window (2 min by
default): a shipper that re-sends a batch after a lost ack adds nothing. Beyond the window,
or when a re-read outbox batch is split into messages differently (other ids), a
duplicate does reach the stream; the aggregator's ledger then counts it once.

A tenant id becomes one subject token: characters outside `[A-Za-z0-9_-]` (dots,
wildcards, spaces) are written `%XX` per UTF-8 byte, so the mapping stays one-to-one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

logger = logging.getLogger(__name__)

STREAM_NAME = "TENANTSERVE_USAGE"
SUBJECT_PREFIX = "tenantserve.usage"
MSG_ID_HEADER = "Nats-Msg-Id"
_TOKEN_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class UsageStream:
    """Where usage events travel: the stream's name, its subjects and its limits."""

    name: str = STREAM_NAME
    subject_prefix: str = SUBJECT_PREFIX
    duplicate_window_s: float = 120.0
    max_age_s: float = 7 * 24 * 3600.0

    @property
    def subjects(self) -> str:
        """The wildcard every tenant's subject matches."""
        return f"{self.subject_prefix}.*"

    def subject(self, tenant_id: str) -> str:
        """The subject a tenant's events are published on."""
        return f"{self.subject_prefix}.{subject_token(tenant_id)}"

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=[self.subjects],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=self.max_age_s,
            duplicate_window=self.duplicate_window_s,
        )


def subject_token(tenant_id: str) -> str:
    """`tenant_id` as one NATS subject token (one-to-one; see the module docstring)."""
    raw = tenant_id.encode()
    if raw and all(b in _TOKEN_SAFE for b in raw):
        return tenant_id
    if not raw:
        return "%"  # no tenant id escapes to a lone "%"
    return "".join(chr(b) if b in _TOKEN_SAFE else f"%{b:02X}" for b in raw)


def message_id(event_ids: Iterable[str]) -> str:
    """The Nats-Msg-Id of a message holding these events: the event id itself for one
    event, else a digest of the sorted ids (the same events give the same id)."""
    ids = sorted(event_ids)
    if not ids:
        raise ValueError("a message holds at least one event")
    if len(ids) == 1:
        return ids[0]
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=16).hexdigest()
    return f"ub_{digest}"


async def connect(url: str, name: str, timeout_s: float = 10.0) -> NATS:
    """A NATS connection that reconnects for ever (every 0.5 s) after a lost server.
    TimeoutError when no server answered within `timeout_s` (nats-py would try the first
    connection for ever too)."""

    async def on_error(e: Exception) -> None:
        logger.warning("nats %s: %s", name, e)

    async def on_disconnected() -> None:
        if not nc.is_closed:  # closing disconnects too
            logger.warning("nats %s: disconnected from %s", name, url)

    async def on_reconnected() -> None:
        logger.info("nats %s: reconnected to %s", name, url)

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            ),
            timeout_s,
        )
    except TimeoutError:
        raise TimeoutError(f"no NATS server answered at {url} in {timeout_s:g} s") from None
    return nc


async def close_quietly(nc: NATS) -> None:
    """Close `nc` unless it is closed already; a failure to close is not an error."""
    if not nc.is_closed:
        with contextlib.suppress(Exception):
            await nc.close()


async def ensure_stream(js: JetStreamContext, stream: UsageStream) -> None:
    """Create the stream, or bring an existing one to `stream`'s config (idempotent; safe
    when several processes start at once)."""
    config = stream.config()
    try:
        await js.add_stream(config)
    except BadRequestError:  # it exists with another config (e.g. an older window)
        await js.update_stream(config)
        logger.info("stream %s updated to %s", stream.name, config)
