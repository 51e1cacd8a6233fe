"""Redis rate limiter: one Lua script per decision, shared by every gateway process.

Keys per tenant (the `{tenant}` braces are a Redis Cluster hash tag, so one script
touches one slot): `<prefix>:{tenant}:rpm` and `<prefix>:{tenant}:tpm` hold GCRA
TATs and expire when the TAT passes, so idle tenants vanish; `<prefix>:{tenant}:inflight`
is a sorted set of in-flight request ids scored by when their slot expires, so a
crashed gateway's slots free themselves after `LimiterPolicy.slot_ttl_s`. The clock
is Redis's `TIME`, so processes on different hosts agree.

When Redis cannot be reached the tier's policy decides: fail open admits with a
`degraded` reservation, fail closed rejects with "limiter_unavailable". The outage is
logged once, and `reserve` does not call Redis again until `unavailable_retry_after_s`
passes (`commit` always tries: a lost commit holds its slot for `slot_ttl_s`).

Calls are group-committed (`redis_batch.py`): one reserve pipeline and one commit
pipeline in flight at a time; what arrives meanwhile goes together in the next, so under
load N decisions cost one round trip (each script still atomic on its own). A reserve
waits for at most the pipeline in flight and its own, each bounded by `store_timeout_s`
(the socket timeout); a pipeline that fails or times out applies the policy to each of
its reserves. A caller cancelled while its reserve is in flight gets nothing, and a slot
the reserve took is given back at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tenantserve.admission.limiter import (
    EPSILON_S,
    WINDOW_S,
    Admit,
    Reject,
    RejectReason,
    Reservation,
    check_cost,
)
from tenantserve.admission.limits import LimiterPolicy, RateLimits
from tenantserve.admission.redis_batch import Batcher
from tenantserve.tiers import Tier

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "ts:rl"

# KEYS: rpm TAT, tpm TAT, in-flight zset.
# ARGV: rpm limit, tpm limit, max concurrent, tokens, request id, slot ttl s,
#       concurrency retry-after s, window s, epsilon s.
# Returns {"admit", reserved tokens} or {"reject", reason, retry-after s} (strings:
# Lua numbers would be truncated to integers on the way out).
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm_limit, tpm_limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_concurrent, tokens = tonumber(ARGV[3]), tonumber(ARGV[4])
local request_id, slot_ttl = ARGV[5], tonumber(ARGV[6])
local concurrency_retry, window, eps = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZSCORE', KEYS[3], request_id) then
  return {'held'}
end

local function gcra(key, cost, limit)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * window / limit
  return new_tat, new_tat - window - now
end
local rpm_tat, rpm_wait = gcra(KEYS[1], 1, rpm_limit)
local tpm_tat, tpm_wait = gcra(KEYS[2], tokens, tpm_limit)

local reason, retry = false, 0
if rpm_wait > eps then reason, retry = 'requests_per_minute', rpm_wait end
if tpm_wait > eps then
  reason = reason or 'tokens_per_minute'
  retry = math.max(retry, tpm_wait)
end
if redis.call('ZCARD', KEYS[3]) >= max_concurrent then
  reason = reason or 'concurrency'
  retry = math.max(retry, concurrency_retry)
end
if reason then
  return {'reject', reason, string.format('%.6f', retry)}
end

local function store(key, tat)
  local ttl_ms = math.ceil((tat - now) * 1000)
  if ttl_ms > 0 then
    redis.call('SET', key, string.format('%.17g', tat), 'PX', ttl_ms)
  else
    redis.call('DEL', key)
  end
end
store(KEYS[1], rpm_tat)
store(KEYS[2], tpm_tat)
redis.call('ZADD', KEYS[3], now + slot_ttl, request_id)
redis.call('PEXPIRE', KEYS[3], math.ceil(slot_ttl * 1000))
return {'admit'}
"""

# KEYS: tpm TAT, in-flight zset. ARGV: request id, refund tokens (may be negative),
# tpm limit, window s. Returns 1 if the slot was held (and refunded), 0 if not.
_COMMIT_LUA = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat - tonumber(ARGV[2]) * tonumber(ARGV[4]) / tonumber(ARGV[3])
local ttl_ms = math.ceil((tat - now) * 1000)
if ttl_ms > 0 then
  redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', ttl_ms)
else
  redis.call('DEL', KEYS[1])
end
return 1
"""


# One script call: its keys and its arguments.
_Call = tuple[tuple[str, ...], tuple[str | int | float, ...]]


async def _evalsha_many(
    client: aioredis.Redis, script: AsyncScript, calls: list[_Call]
) -> list[Any]:
    """`script` for each call in one non-transactional pipeline (each call is atomic on its
    own): the answers in order, an error a call answered in its place. A script Redis
    does not have (restarted, flushed) is loaded and those calls run again."""
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    results: list[Any] = await pipe.execute(raise_on_error=False)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        await client.script_load(script.script)
        pipe = client.pipeline(transaction=False)
        for i in missing:
            keys, args = calls[i]
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        for i, r in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
            results[i] = r
    return results


# Tenants whose keys are cached before the cache starts over.
_MAX_CACHED_KEYS = 10_000

# Timeouts in a row before the store counts as down (a refused connection counts at once).
MAX_CONSECUTIVE_TIMEOUTS = 3


class RedisRateLimiter:
    """GCRA and in-flight slots in Redis, one atomic script round trip per call.

    A client passed in should have short timeouts and no retries (redis-py's default
    retries for seconds); `from_url` builds one from the policy.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        policy: LimiterPolicy | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._policy = policy or LimiterPolicy()
        self._prefix = key_prefix
        self._owns_client = owns_client
        self._reserve = client.register_script(_RESERVE_LUA)
        self._commit = client.register_script(_COMMIT_LUA)
        # Bounds the calls in flight to the connections there are; the rest queue here.
        self._connections = asyncio.Semaphore(self._policy.max_connections)
        # monotonic time until which Redis is considered down and not called; None: up.
        self._down_until_s: float | None = None
        self._consecutive_timeouts = 0
        self._keys: dict[str, tuple[str, str, str]] = {}
        # Commits run after the response: those made while one is being written go
        # together in the next pipeline (each script still atomic on its own).
        self._commits: Batcher[_Call, None] = Batcher(self._flush_commits)
        # Reserves too: the first goes at once, those made while it is in flight go
        # together next (one round trip), each script atomic on its own as before.
        self._reserves: Batcher[tuple[_Call, Reservation], Any] = Batcher(
            self._flush_reserves,
            abandoned=self._abandoned_reserve,
            start_timeout_s=self._policy.store_timeout_s,
            expired=self._saturated,
        )

    @classmethod
    def from_url(
        cls, url: str, policy: LimiterPolicy | None = None, key_prefix: str = DEFAULT_KEY_PREFIX
    ) -> RedisRateLimiter:
        """A limiter with its own client: short timeouts, no retries (the policy decides)."""
        policy = policy or LimiterPolicy()
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=policy.max_connections,
            timeout=policy.store_timeout_s,
            socket_timeout=policy.store_timeout_s,
            socket_connect_timeout=policy.store_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis(connection_pool=pool)
        return cls(client, policy, key_prefix, owns_client=True)

    def keys(self, tenant_id: str) -> tuple[str, str, str]:
        """The tenant's rpm TAT, tpm TAT and in-flight keys."""
        keys = self._keys.get(tenant_id)
        if keys is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            base = f"{self._prefix}:{{{tenant_id}}}"
            keys = self._keys[tenant_id] = (f"{base}:rpm", f"{base}:tpm", f"{base}:inflight")
        return keys

    async def reserve(
        self, tenant_id: str, tier: Tier, limits: RateLimits, tokens: int, request_id: str
    ) -> Admit | Reject:
        """Take 1 request, `tokens` tokens and one slot atomically, or nothing and a Reject."""
        if (rejected := check_cost(limits, tokens)) is not None:
            return rejected
        reservation = Reservation(tenant_id, tier, limits, request_id, tokens)
        if self._is_down():
            return self._unavailable(reservation)
        policy = self._policy
        keys = self.keys(tenant_id)
        args = (
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.max_concurrent,
            tokens,
            request_id,
            policy.slot_ttl_s,
            policy.concurrency_retry_after_s,
            WINDOW_S,
            EPSILON_S,
        )
        result = await self._reserves.submit(((keys, args), reservation))
        if result is None:
            return self._unavailable(reservation)
        if result[0] == b"reject":
            reason: RejectReason = result[1].decode()
            return Reject(reason, float(result[2]))
        # "held": the request_id is already in flight (e.g. a retried reserve); its
        # slot and tokens were taken by the first call.
        return Admit(reservation)

    async def _flush_reserves(self, items: list[tuple[_Call, Reservation]]) -> list[Any]:
        """The reserve script for each item, pipelined when there are several (one round
        trip); None for an item Redis did not answer (the tier's policy decides)."""
        failed: list[Any] = [None] * len(items)
        if self._is_down():
            return failed
        try:
            async with self._connections:
                if len(items) == 1:
                    (keys, args), _ = items[0]
                    results = [await self._reserve(keys=keys, args=args)]
                else:
                    calls = [call for call, _ in items]
                    results = await _evalsha_many(self._client, self._reserve, calls)
        except (RedisError, OSError) as e:
            self._failed(e)
            return failed
        self._mark_up()
        for i, r in enumerate(results):
            if isinstance(r, Exception):
                log.warning("rate limiter reserve script failed: %r", r)
                results[i] = None
        return results

    def _saturated(self, item: tuple[_Call, Reservation]) -> None:
        """A reserve that waited `store_timeout_s` for its turn: the policy decides, and
        Redis is not marked down (one slow call is not an outage)."""
        log.debug("rate limiter saturated: no turn within %.3f s", self._policy.store_timeout_s)

    def _abandoned_reserve(self, item: tuple[_Call, Reservation], result: Any) -> None:
        """A reserve whose caller went away (cancelled) before its answer: a slot it took
        is given back at once rather than held until it expires."""
        if result is not None and result[0] == b"admit":
            self._commits.submit_nowait(self._commit_call(item[1], 0))

    async def commit(self, reservation: Reservation, actual_tokens: int) -> None:
        """Free the slot and refund `reserved - actual` tokens; a second commit is a no-op.

        Using more than reserved charges the difference. A commit after the slot
        expired (`slot_ttl_s`) and was swept finds nothing to free and refunds nothing.

        If Redis is unreachable the refund is dropped and the slot frees itself after
        `slot_ttl_s`; a commit never raises.
        """
        if reservation.degraded:
            return
        await self._commits.submit(self._commit_call(reservation, actual_tokens))

    def _commit_call(self, reservation: Reservation, actual_tokens: int) -> _Call:
        _, tpm_key, inflight_key = self.keys(reservation.tenant_id)
        args = (
            reservation.request_id,
            reservation.reserved_tokens - actual_tokens,
            reservation.limits.tokens_per_minute,
            WINDOW_S,
        )
        return (tpm_key, inflight_key), args

    async def _flush_commits(self, calls: list[_Call]) -> list[None]:
        """The commit script for each of `calls`, pipelined: one round trip."""
        done: list[None] = [None] * len(calls)
        try:
            async with self._connections:
                results = await _evalsha_many(self._client, self._commit, calls)
        except (RedisError, OSError) as e:
            self._failed(e)
            return done
        self._mark_up()
        for r in results:
            if isinstance(r, Exception):
                log.warning("rate limiter commit script failed: %r", r)
        return done

    async def close(self) -> None:
        """Write the commits still pending, then close the client if this limiter created
        it."""
        await self._commits.drain()
        if self._owns_client:
            await self._client.aclose()

    def _unavailable(self, reservation: Reservation) -> Admit | Reject:
        if self._policy.fails_open(reservation.tier):
            return Admit(
                Reservation(
                    reservation.tenant_id,
                    reservation.tier,
                    reservation.limits,
                    reservation.request_id,
                    reservation.reserved_tokens,
                    degraded=True,
                )
            )
        return Reject("limiter_unavailable", self._policy.unavailable_retry_after_s)

    def _is_down(self) -> bool:
        return self._down_until_s is not None and time.monotonic() < self._down_until_s

    def _failed(self, error: BaseException) -> None:
        """A refused or broken connection marks the store down at once; a timeout only
        when it is the MAX_CONSECUTIVE_TIMEOUTS-th in a row (one slow call on a busy host
        is that call's failure, not an outage that shuts fail-closed tiers out)."""
        if isinstance(error, (RedisTimeoutError, TimeoutError)):
            self._consecutive_timeouts += 1
            if self._consecutive_timeouts < MAX_CONSECUTIVE_TIMEOUTS:
                return
        self._mark_down(error)

    def _mark_down(self, error: BaseException) -> None:
        if self._down_until_s is None:
            log.warning(
                "rate limiter store unreachable, applying per-tier fail-open/closed policy: %r",
                error,
            )
        self._down_until_s = time.monotonic() + self._policy.unavailable_retry_after_s

    def _mark_up(self) -> None:
        self._consecutive_timeouts = 0
        if self._down_until_s is not None:
            log.warning("rate limiter store reachable again")
            self._down_until_s = None
