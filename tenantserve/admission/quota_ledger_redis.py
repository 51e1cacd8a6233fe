"""Redis quota ledger: usage per tenant and UTC period, shared by every gateway process.

One HASH per tenant and period, `<prefix>:{tenant}:day:2026-11-27` and
`<prefix>:{tenant}:month:2026-11`, with the fields `requests`, `prompt_tokens` and
`completion_tokens` (`tokens` is their sum, computed on read). The `{tenant}` braces
are a Redis Cluster hash tag, so a tenant's keys share one slot and one MULTI can
touch them all. Each key expires `KEY_GRACE_S` after its period ends.

    record   HINCRBY the three fields of the day's and the month's hash, EXPIREAT both,
             in a MULTI/EXEC; records made while one is being written are summed per
             key and go together in the next (one round trip for all of them)
    usage    one pipelined round trip: HMGET of every period the quotas name

Fails open: when Redis cannot be reached, `usage` reads as nothing used (a warning is
logged once per outage) and `record` drops that request's counts. Quotas are daily or
monthly budgets, so a short outage lets through at most a few seconds' worth of a
tenant's traffic on top, and the rate limiter still bounds that traffic per minute;
refusing every request because a budget counter is briefly unreachable would be the
worse failure. While Redis is marked down the ledger does not call it (no request waits
for a timeout) until `down_retry_s` passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tenantserve.admission.quota_ledger import PeriodCounters, check_counts, usage_for
from tenantserve.admission.quotas import (
    Quota,
    QuotaPeriod,
    QuotaUsage,
    period_end,
    period_key,
)
from tenantserve.admission.redis_batch import Batcher

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "ts:quota"
# Keys outlive their period by this much (gateway clocks a little apart still agree).
KEY_GRACE_S = 3600
# Socket timeouts of one round trip, and the longest `usage` waits for a connection.
DEFAULT_TIMEOUT_S = 0.5
DEFAULT_MAX_CONNECTIONS = 16
# After a failure, Redis is not called again for this long.
DEFAULT_DOWN_RETRY_S = 1.0

_FIELDS = ("requests", "prompt_tokens", "completion_tokens")

# One request's record: (key, its EXPIREAT s) of each period, and its counts in _FIELDS order.
_RecordKeys = tuple[tuple[str, int], ...]
_Record = tuple[_RecordKeys, tuple[int, int, int]]
# Cached key sets (tenant, day) before the cache starts over.
_MAX_CACHED_KEYS = 10_000


class RedisQuotaLedger:
    """Per-tenant, per-period counters in Redis hashes; one round trip per call.

    A client passed in should have short timeouts and no retries; `from_url` builds one.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        down_retry_s: float = DEFAULT_DOWN_RETRY_S,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._timeout_s = timeout_s
        self._down_retry_s = down_retry_s
        self._owns_client = owns_client
        # Calls in flight are bounded by the connections there are; the rest queue here.
        self._connections = asyncio.Semaphore(max_connections)
        # monotonic time until which Redis is considered down and not called; None: up.
        self._down_until_s: float | None = None
        self._records: Batcher[_Record, None] = Batcher(self._flush_records)
        # A tenant's keys (and their expiry) for a UTC day: the same for all its records.
        self._record_keys: dict[tuple[str, int, int, int], _RecordKeys] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> RedisQuotaLedger:
        """A ledger with its own client: short timeouts, no retries."""
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis(connection_pool=pool)
        return cls(
            client,
            key_prefix,
            timeout_s=timeout_s,
            max_connections=max_connections,
            owns_client=True,
        )

    def key(self, tenant_id: str, period: QuotaPeriod, now: datetime) -> str:
        """The hash of the tenant's counts in the period containing `now`."""
        return f"{self._prefix}:{{{tenant_id}}}:{period.value}:{period_key(period, now)}"

    async def usage(self, tenant_id: str, quotas: Sequence[Quota], now: datetime) -> QuotaUsage:
        """What the tenant used in the periods containing `now`, for every (period,
        metric) the quotas name; zero for all of them when Redis cannot be reached."""
        periods = sorted({q.period for q in quotas})
        if not periods or self._is_down():
            return usage_for(quotas, {})
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._connections.acquire()
        except TimeoutError:
            log.debug("quota ledger saturated: no connection within %.3f s", self._timeout_s)
            return usage_for(quotas, {})
        try:
            pipe = self._client.pipeline(transaction=False)
            for period in periods:
                pipe.hmget(self.key(tenant_id, period, now), list(_FIELDS))
            rows = await pipe.execute()
        except (RedisError, OSError) as e:
            self._mark_down(e)
            return usage_for(quotas, {})
        finally:
            self._connections.release()
        self._mark_up()
        counters = {
            period: PeriodCounters(*(int(v) if v is not None else 0 for v in row))
            for period, row in zip(periods, rows, strict=True)
        }
        return usage_for(quotas, counters)

    async def record(
        self,
        tenant_id: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        now: datetime,
        requests: int = 1,
    ) -> None:
        """Add a completed request's counts to the day and month containing `now`, in a
        MULTI/EXEC (shared with the records made meanwhile); dropped (and logged) when
        Redis cannot be reached."""
        check_counts(requests, prompt_tokens, completion_tokens)
        if self._is_down():
            log.debug("quota ledger down: dropped a record for %s", tenant_id)
            return
        day = (tenant_id, now.year, now.month, now.day)
        keys = self._record_keys.get(day)
        if keys is None:
            if len(self._record_keys) >= _MAX_CACHED_KEYS:
                self._record_keys.clear()
            keys = self._record_keys[day] = tuple(
                (
                    self.key(tenant_id, period, now),
                    int(period_end(period, now).timestamp()) + KEY_GRACE_S,
                )
                for period in QuotaPeriod
            )
        await self._records.submit((keys, (requests, prompt_tokens, completion_tokens)))

    async def _flush_records(self, records: list[_Record]) -> list[None]:
        """The records' counts summed per key, written in one MULTI/EXEC."""
        done: list[None] = [None] * len(records)
        if self._is_down():
            log.debug("quota ledger down: dropped %d records", len(records))
            return done
        totals: dict[str, list[int]] = {}
        expiry: dict[str, int] = {}
        for keys, counts in records:
            for key, expires_at_s in keys:
                total = totals.setdefault(key, [0, 0, 0])
                for i, count in enumerate(counts):
                    total[i] += count
                expiry[key] = expires_at_s
        try:
            async with self._connections:
                pipe = self._client.pipeline(transaction=True)
                for key, total in totals.items():
                    for field, amount in zip(_FIELDS, total, strict=True):
                        pipe.hincrby(key, field, amount)
                    pipe.expireat(key, expiry[key])
                await pipe.execute()
        except (RedisError, OSError) as e:
            self._mark_down(e)
            return done
        self._mark_up()
        return done

    async def close(self) -> None:
        """Write the records still pending, then close the client if this ledger created
        it."""
        await self._records.drain()
        if self._owns_client:
            await self._client.aclose()

    def _is_down(self) -> bool:
        return self._down_until_s is not None and time.monotonic() < self._down_until_s

    def _mark_down(self, error: BaseException) -> None:
        if self._down_until_s is None:
            log.warning(
                "quota ledger store unreachable; quotas read as unused and usage is not "
                "recorded until it is back: %r",
                error,
            )
        self._down_until_s = time.monotonic() + self._down_retry_s

    def _mark_up(self) -> None:
        if self._down_until_s is not None:
            log.warning("quota ledger store reachable again")
            self._down_until_s = None
