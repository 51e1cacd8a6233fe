"""NoisyNeighborMonitor through the Dispatcher: finished requests feed the pool's detector,
a tenant that takes most tokens while the others' TTFT p95 degrades is demoted in the
fair queue and logged for operators (`GET /admin/events`). A fake clock drives it all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from tenantserve.admission.limiter_local import LocalRateLimiter
from tenantserve.admission.policy import PolicyConfig
from tenantserve.engine.request import EngineRequest, FinishReason, RequestMetrics, RequestOutput
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.gateway.catalog import SHARED_POOL, ServedModel
from tenantserve.gateway.dispatch import Dispatcher
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.noisy_neighbors import NoisyNeighborMonitor
from tenantserve.gateway.pools import EnginePool, build_catalog
from tenantserve.gateway.schemas import ChatCompletionRequest
from tenantserve.scheduling.fair_queue import FairQueue
from tenantserve.scheduling.noisy_neighbor import (
    NoisyNeighborConfig,
    NoisyNeighborDetector,
    NoisyNeighborEvent,
)
from tenantserve.tenancy.model import Region, TenantContext, TenantLimits
from tenantserve.tiers import Tier
from tests.unit.gateway.test_events import ADMIN_TOKEN, admin_client

MAX_TOKENS = 8
DETECTOR = NoisyNeighborConfig(window_s=60, min_samples=10, cooldown_s=120)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _ScriptedEngine:
    """Finishes every request at once, reporting the TTFT set for its tenant."""

    def __init__(self) -> None:
        self.ttft_s: dict[str, float] = {}
        self.tiers: list[tuple[str, Tier]] = []

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        self.tiers.append((request.tenant_id, request.tier))
        metrics = RequestMetrics(
            num_prompt_tokens=len(request.prompt_token_ids),
            num_cached_tokens=0,
            num_completion_tokens=MAX_TOKENS,
            queue_time_s=0.0,
            ttft_s=self.ttft_s.get(request.tenant_id, 0.2),
            engine_time_s=0.0,
            num_preemptions=0,
        )
        ids = tuple(range(MAX_TOKENS))
        yield RequestOutput(
            request.request_id, ids, "x", True, FinishReason.LENGTH, metrics=metrics
        )

    async def abort(self, request_id: str) -> None:
        pass


class _Pool:
    def __init__(self) -> None:
        self.clock = _Clock()
        self.engine = _ScriptedEngine()
        self.queue = FairQueue(clock=self.clock)
        self.events = EventLog(clock=lambda: 1_700_000_000.0)
        self.monitor = NoisyNeighborMonitor(
            NoisyNeighborDetector(DETECTOR), self.queue, self.events, SHARED_POOL
        )
        model = ServedModel("fake", cast(Tokenizer, None), max_context_tokens=4096)
        pool = EnginePool(SHARED_POOL, self.engine, model, self.queue, noisy_neighbors=self.monitor)
        self.dispatcher = Dispatcher(
            [pool], build_catalog([pool]), LocalRateLimiter(clock=self.clock), PolicyConfig()
        )
        self._ids = 0

    async def serve(self, tenant_id: str, num_prompt_tokens: int, n: int = 1) -> None:
        ctx = TenantContext(
            tenant_id,
            Tier.STANDARD,
            Region.US,
            key_id=f"k-{tenant_id}",
            limits=TenantLimits(requests_per_minute=100_000, tokens_per_minute=10_000_000),
        )
        body = ChatCompletionRequest(
            model="fake", messages=[{"role": "user", "content": "hi"}], max_tokens=MAX_TOKENS
        )
        for _ in range(n):
            self._ids += 1
            generation = await self.dispatcher.dispatch(
                ctx, f"req_{self._ids}", body, [1] * num_prompt_tokens, "messages"
            )
            await generation.collect()  # closing it releases the slot and records it


async def test_a_dominant_tenant_that_slows_the_others_is_demoted_and_logged() -> None:
    pool = _Pool()
    # Calm: three tenants share evenly at TTFT 0.2 s; the baseline p95 is learned.
    for tenant in ("a", "b", "c"):
        await pool.serve(tenant, num_prompt_tokens=50, n=10)
    pool.clock.now = 6.0
    await pool.serve("a", num_prompt_tokens=50)
    assert pool.monitor.detector.baseline_ttft_p95_s == 0.2
    assert pool.events.events() == []

    # The hog takes most of the tokens; everybody else's TTFT triples.
    pool.clock.now = 100.0
    pool.engine.ttft_s = {"a": 0.6, "b": 0.6}
    await pool.serve("hog", num_prompt_tokens=2000, n=10)
    await pool.serve("a", num_prompt_tokens=50, n=10)
    await pool.serve("b", num_prompt_tokens=50, n=10)
    assert pool.events.events() == []  # evaluated at most every 5 s
    pool.clock.now = 105.0
    await pool.serve("b", num_prompt_tokens=50)

    [event] = pool.events.events()
    assert (event.kind, event.tenant_id) == ("noisy_neighbor", "hog")
    assert event.details["action"] == "demote"
    assert event.details["pool"] == SHARED_POOL
    assert event.details["token_share"] > DETECTOR.share_threshold
    assert event.details["others_ttft_p95_ratio"] > DETECTOR.ttft_ratio_threshold
    demoted = pool.queue.stats().demoted_until
    assert demoted == {"hog": 105.0 + pool.queue.config.demotion_cooldown_s}

    # The hog's next request is scheduled (and handed to the engine) one tier lower.
    await pool.serve("hog", num_prompt_tokens=50)
    await pool.serve("a", num_prompt_tokens=50)
    assert pool.engine.tiers[-2:] == [("hog", Tier.FREE), ("a", Tier.STANDARD)]

    # Operators see it; a tenant's key does not.
    async with admin_client(pool.events, ADMIN_TOKEN) as admin:
        r = await admin.get("/admin/events")
    assert r.status_code == 200, r.text
    [shown] = r.json()["data"]
    assert (shown["kind"], shown["tenant_id"]) == ("noisy_neighbor", "hog")
    assert shown["created_at"] == 1_700_000_000.0
    async with admin_client(pool.events, "ts-k-a-secret") as tenant:
        assert (await tenant.get("/admin/events")).status_code == 401


async def test_even_sharing_with_slow_ttft_flags_nobody() -> None:
    pool = _Pool()
    pool.monitor.detector.baseline_ttft_p95_s = 0.2
    pool.engine.ttft_s = {"a": 0.9, "b": 0.9, "c": 0.9}
    for tenant in ("a", "b", "c"):
        await pool.serve(tenant, num_prompt_tokens=500, n=10)
    pool.clock.now = 10.0
    await pool.serve("a", num_prompt_tokens=500)
    assert pool.events.events() == []
    assert pool.queue.stats().demoted_until == {}


class _CountingDetector(NoisyNeighborDetector):
    def __init__(self) -> None:
        super().__init__(DETECTOR)
        self.evaluations: list[float] = []

    def evaluate(self, now: float) -> list[NoisyNeighborEvent]:
        self.evaluations.append(now)
        return super().evaluate(now)


def test_the_detector_is_evaluated_at_most_every_evaluate_every_s() -> None:
    clock, detector = _Clock(), _CountingDetector()
    queue = FairQueue(clock=clock)
    monitor = NoisyNeighborMonitor(detector, queue, EventLog(), SHARED_POOL, evaluate_every_s=5)
    for now in (0.0, 1.0, 4.9, 5.0, 6.0, 9.9, 10.0, 30.0):
        clock.now = now
        monitor.record("a", 100, 0.2)
    assert detector.evaluations == [5.0, 10.0, 30.0]
