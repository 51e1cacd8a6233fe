"""Rate limiter benchmark: admission decision latency, in-process vs Redis.

    .venv/bin/python bench/limiter.py [--redis-url redis://127.0.0.1:6379/15] [--decisions 5000]

For each backend: `reserve` latency (one admission decision) and `commit` latency, with
decisions issued one at a time, from 200 concurrent tasks (same total), and open loop
at a fixed 500 requests/s (the gateway's target load; 2,500 requests). Limits are
high enough that every decision admits, so the full path (three limits checked and
taken) is measured; tenants rotate over 100 ids. Redis keys go under a fresh prefix
that is deleted afterwards. A last row times a bare redis-py PING per request on the
same client settings: the floor any Redis-backed decision pays. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tenantserve.admission import (  # noqa: E402
    Admit,
    LocalRateLimiter,
    RateLimiter,
    RateLimits,
    RedisRateLimiter,
)
from tenantserve.tiers import Tier  # noqa: E402

LIMITS = RateLimits(requests_per_minute=10**9, tokens_per_minute=10**12, max_concurrent=10**6)
NUM_TENANTS = 100
TOKENS = 512


async def run(
    limiter: RateLimiter, decisions: int, concurrency: int
) -> tuple[list[float], list[float], float]:
    """reserve and commit latencies (seconds) and wall time for `decisions` requests."""
    reserve_s: list[float] = []
    commit_s: list[float] = []
    todo = iter(range(decisions))

    async def worker() -> None:
        for i in todo:
            t0 = time.perf_counter()
            result = await limiter.reserve(
                f"tenant-{i % NUM_TENANTS}", Tier.STANDARD, LIMITS, TOKENS, uuid.uuid4().hex
            )
            t1 = time.perf_counter()
            assert isinstance(result, Admit), result
            await limiter.commit(result.reservation, actual_tokens=TOKENS // 2)
            reserve_s.append(t1 - t0)
            commit_s.append(time.perf_counter() - t1)

    start_s = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return reserve_s, commit_s, time.perf_counter() - start_s


async def run_open_loop(
    limiter: RateLimiter, decisions: int, rate_per_s: float
) -> tuple[list[float], list[float], float]:
    """As `run`, but requests arrive every 1/rate s whether or not earlier ones finished."""
    reserve_s: list[float] = []
    commit_s: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        result = await limiter.reserve(
            f"tenant-{i % NUM_TENANTS}", Tier.STANDARD, LIMITS, TOKENS, uuid.uuid4().hex
        )
        t1 = time.perf_counter()
        assert isinstance(result, Admit), result
        await limiter.commit(result.reservation, actual_tokens=TOKENS // 2)
        reserve_s.append(t1 - t0)
        commit_s.append(time.perf_counter() - t1)

    start_s = time.perf_counter()
    tasks = []
    for i in range(decisions):
        await asyncio.sleep(max(0.0, start_s + i / rate_per_s - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return reserve_s, commit_s, time.perf_counter() - start_s


async def run_ping(client: aioredis.Redis, decisions: int, concurrency: int) -> list[float]:
    """PING latencies (seconds): one round trip through redis-py, no script."""
    ping_s: list[float] = []
    todo = iter(range(decisions))

    async def worker() -> None:
        for _ in todo:
            t0 = time.perf_counter()
            await client.ping()
            ping_s.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ping_s


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] * 1e3


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()

    prefix = f"ts:rl:bench:{uuid.uuid4().hex}"
    backends: dict[str, RateLimiter] = {
        "in-process": LocalRateLimiter(),
        "redis": RedisRateLimiter.from_url(args.redis_url, key_prefix=prefix),
    }
    rows = []
    try:
        for name, limiter in backends.items():
            await run(limiter, 500, 1)  # warm up: connections, script cache
            for load in (1, args.concurrency, "500 req/s"):
                if isinstance(load, int):
                    measured = await run(limiter, args.decisions, load)
                    num = args.decisions
                else:
                    num = 2500
                    measured = await run_open_loop(limiter, num, 500.0)
                reserve_s, commit_s, wall_s = measured
                rows.append(
                    f"| {name} | {load} | {pct(reserve_s, 50):.3f} | "
                    f"{pct(reserve_s, 99):.3f} | {pct(commit_s, 50):.3f} | "
                    f"{pct(commit_s, 99):.3f} | {num / wall_s:,.0f} |"
                )
        client = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                args.redis_url, max_connections=64
            )
        )
        await run_ping(client, 500, 1)
        for concurrency in (1, args.concurrency):
            ping_s = await run_ping(client, args.decisions, concurrency)
            rows.append(
                f"| redis PING only | {concurrency} | {pct(ping_s, 50):.3f} | "
                f"{pct(ping_s, 99):.3f} | | | |"
            )
        await client.aclose()
    finally:
        for limiter in backends.values():
            await limiter.close()
        client = aioredis.Redis.from_url(args.redis_url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    print(f"{args.decisions} decisions per closed-loop row, each reserve + commit; ms\n")
    print("| backend | load | reserve p50 | reserve p99 | commit p50 | commit p99 | req/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
