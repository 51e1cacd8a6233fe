"""`PoolCollector`: per pool and engine gauges and counters, read at scrape time.

The built-in engine runs in its own process; its stats (`EngineStats`) come back over the
pipe, so a scrape first awaits `refresh()` on the event loop (at most once per `max_age_s`,
concurrent scrapes share one refresh), then `collect()` renders the snapshot. A scrape
from another thread (the separate metrics port) asks the loop for the refresh.

Labels: `pool` (a configured name), `tier`, `state`, `source`: closed sets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from tenantserve.engine.client import AsyncEngineClient
from tenantserve.gateway.pools import EnginePool, Pool
from tenantserve.scheduling.queue_types import FairQueueStats

if TYPE_CHECKING:  # the engine module imports torch; the gateway only reads its stats
    from tenantserve.engine.engine import EngineStats

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 1.0
STATS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class PoolSnapshot:
    """One pool at one moment: its queue, and its engine's stats (engine pools)."""

    pool: str
    queue: FairQueueStats
    engine: EngineStats | None = None
    engine_up: bool | None = None  # None: not an engine pool
    engine_restarts: int = 0


class PoolCollector(Collector):
    """Renders the latest `PoolSnapshot`s as Prometheus families."""

    def __init__(self, pools: Sequence[Pool], max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.pools = tuple(pools)
        self.max_age_s = max_age_s
        self._snapshots: list[PoolSnapshot] = []
        self._taken_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the pools live on (scrapes from other threads refresh through it)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    async def refresh(self) -> None:
        """Take fresh snapshots unless the last ones are younger than `max_age_s`."""
        if time.monotonic() - self._taken_at < self.max_age_s:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._take())
        await asyncio.shield(self._refreshing)

    async def _take(self) -> None:
        snapshots = await asyncio.gather(*(snapshot(p) for p in self.pools))
        self._snapshots = list(snapshots)
        self._taken_at = time.monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily]:
        self._refresh_from_other_thread()
        yield from render(self._snapshots)

    def _refresh_from_other_thread(self) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread or loop.is_closed():
            return  # on the loop: the caller awaited refresh() already
        future = asyncio.run_coroutine_threadsafe(self.refresh(), loop)
        try:
            future.result(STATS_TIMEOUT_S + 1)
        except Exception:
            future.cancel()
            logger.warning("pool stats refresh for a metrics scrape failed", exc_info=True)


def render(
    snapshots: Sequence[PoolSnapshot],
) -> Iterator[GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily]:
    """The families of `snapshots`."""
    in_flight = GaugeMetricFamily(
        "tenantserve_pool_in_flight", "Requests holding a slot of the pool.", labels=["pool"]
    )
    waiting = GaugeMetricFamily(
        "tenantserve_pool_waiting",
        "Requests waiting in the pool's fair queue.",
        labels=["pool", "tier"],
    )
    queue_full = CounterMetricFamily(
        "tenantserve_pool_queue_full",
        "Requests refused with a full tier queue.",
        labels=["pool", "tier"],
    )
    shed = CounterMetricFamily(
        "tenantserve_pool_shed", "Requests shed under overload.", labels=["pool", "tier"]
    )
    for snap in snapshots:
        in_flight.add_metric([snap.pool], snap.queue.in_flight)
        for tier, n in snap.queue.waiting.items():
            waiting.add_metric([snap.pool, tier.value], n)
        for tier, n in snap.queue.rejected.items():
            queue_full.add_metric([snap.pool, tier.value], n)
        for tier, n in snap.queue.shed.items():
            shed.add_metric([snap.pool, tier.value], n)
    yield from (in_flight, waiting, queue_full, shed)
    yield from _engine_families([s for s in snapshots if s.engine_up is not None])


def _engine_families(
    snapshots: Sequence[PoolSnapshot],
) -> Iterator[GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily]:
    def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"tenantserve_engine_{name}", doc, labels=["pool", *labels])

    def counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(f"tenantserve_engine_{name}", doc, labels=["pool", *labels])

    up = gauge("up", "1 when the engine answered the stats query, else 0.")
    restarts = counter("restarts", "Times the engine process died and was restarted.")
    running = gauge("running_requests", "Sequences in the running batch.")
    waiting = gauge("waiting_requests", "Sequences waiting for a seat in the batch.")
    batch_seqs = gauge("batch_size", "Sequences in the last step's batch.")
    batch_tokens = gauge("batch_tokens", "Tokens computed in the last step.")
    steps = counter("steps", "Engine steps.")
    batched = counter("batched_sequences", "Sequences over all steps (/ steps: mean batch).")
    preemptions = counter("preemptions", "Sequences preempted (blocks freed, recomputed).")
    kv = gauge("kv_blocks", "KV cache blocks by state: used, evictable (cached), free.", ["state"])
    evictions = counter("kv_evictions", "Cached KV blocks evicted.")
    prompt = counter("prefix_cache_queried_tokens", "Prompt tokens of finished requests.")
    hits = counter("prefix_cache_hit_tokens", "Of those, served from the prefix cache.")
    hit_rate = gauge("prefix_cache_hit_rate", "hit tokens / queried tokens since start.")
    adapters = gauge(
        "adapters", "LoRA adapters by tier: active, pinned, host, loading, failed.", ["state"]
    )
    loads = SummaryMetricFamily(
        "tenantserve_engine_adapter_load_seconds",
        "Adapter loads (count) and their time (sum), from disk or host memory.",
        labels=["pool", "source"],
    )
    for snap in snapshots:
        pool = snap.pool
        up.add_metric([pool], 1.0 if snap.engine_up else 0.0)
        restarts.add_metric([pool], snap.engine_restarts)
        s = snap.engine
        if s is None:
            continue
        running.add_metric([pool], s.num_running)
        waiting.add_metric([pool], s.num_waiting)
        batch_seqs.add_metric([pool], s.num_batch_seqs)
        batch_tokens.add_metric([pool], s.num_batch_tokens)
        steps.add_metric([pool], s.num_steps)
        batched.add_metric([pool], s.num_batched_seqs_total)
        preemptions.add_metric([pool], s.num_preemptions)
        evictable = s.kv.num_blocks - s.kv.num_used_blocks - s.kv.num_free_blocks
        kv.add_metric([pool, "used"], s.kv.num_used_blocks)
        kv.add_metric([pool, "evictable"], evictable)
        kv.add_metric([pool, "free"], s.kv.num_free_blocks)
        evictions.add_metric([pool], s.kv.num_evictions)
        prompt.add_metric([pool], s.num_prompt_tokens_total)
        hits.add_metric([pool], s.num_cached_prompt_tokens_total)
        queried = s.num_prompt_tokens_total
        hit_rate.add_metric([pool], s.num_cached_prompt_tokens_total / queried if queried else 0)
        a = s.adapters
        if a is not None:
            for state, n in (
                ("active", a.num_active),
                ("pinned", a.num_pinned),
                ("host", a.num_host),
                ("loading", a.num_loading),
                ("failed", a.num_failed),
            ):
                adapters.add_metric([pool, state], n)
            loads.add_metric([pool, "disk"], a.num_disk_loads, a.disk_load_s_total)
            loads.add_metric([pool, "host"], a.num_host_loads, a.host_load_s_total)
    yield from (up, restarts, running, waiting, batch_seqs, batch_tokens, steps, batched)
    yield from (preemptions, kv, evictions, prompt, hits, hit_rate, adapters, loads)


async def snapshot(pool: Pool) -> PoolSnapshot:
    """The pool's queue now and, for an engine pool, its engine's stats (None when the
    engine does not answer within `STATS_TIMEOUT_S`)."""
    queue = pool.queue.stats()
    if not isinstance(pool, EnginePool) or not isinstance(pool.engine, AsyncEngineClient):
        return PoolSnapshot(pool.name, queue)
    engine = pool.engine
    try:
        stats = await asyncio.wait_for(engine.stats(), STATS_TIMEOUT_S)
    except Exception as e:  # restarting, shut down, slow: reported as down
        logger.debug("no stats from pool %s's engine: %s", pool.name, e)
        return PoolSnapshot(pool.name, queue, None, False, engine.num_restarts)
    return PoolSnapshot(pool.name, queue, stats, True, engine.num_restarts)
