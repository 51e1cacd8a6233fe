"""FairQueue: tier priority with aging, VTC between tenants, shedding, cancellation, no leaks."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest

from tenantserve.errors import ConfigError
from tenantserve.scheduling import (
    FairQueue,
    FairQueueConfig,
    Grant,
    NoisyNeighborEvent,
    Overloaded,
    QueueFull,
    Shed,
    Ticket,
)
from tenantserve.tiers import Tier

pytestmark = pytest.mark.timeout(10)

UNBOUNDED = {t: 1_000_000 for t in Tier}
_ids = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Pool:
    """A FairQueue on a fake clock, plus the acquire tasks run against it."""

    def __init__(self, **overrides: Any) -> None:
        self.clock = FakeClock()
        cfg: dict[str, Any] = {
            "max_in_flight": 1,
            "max_waiting_per_tier": UNBOUNDED,
            "max_waiting": 1_000_000,
            "priority_headroom": {},  # strict slot count unless a test says otherwise
        }
        self.queue = FairQueue(FairQueueConfig(**(cfg | overrides)), clock=self.clock)
        # Acquire tasks whose outcome new_grants() has not reported yet, with their tenant.
        self._pending: list[tuple[asyncio.Task[Grant], str]] = []

    def ticket(self, tenant: str, tier: Tier = Tier.STANDARD, est_in: int = 10) -> Ticket:
        return Ticket(f"r{next(_ids)}", tenant, tier, est_in, 10, arrival_time=self.clock.now)

    def submit(
        self, tenant: str, tier: Tier = Tier.STANDARD, est_in: int = 10
    ) -> asyncio.Task[Grant]:
        task = asyncio.get_running_loop().create_task(
            self.queue.acquire(self.ticket(tenant, tier, est_in))
        )
        self._pending.append((task, tenant))
        return task

    async def settle(self) -> None:
        """Let every task that can run, run (grants are made synchronously at release)."""
        for _ in range(5):
            await asyncio.sleep(0)

    def num_waiting(self, tenant: str) -> int:
        return sum(not task.done() for task, t in self._pending if t == tenant)

    async def new_grants(self) -> list[Grant]:
        """Grants made since the last call, in the order they were made."""
        await self.settle()
        done = [task for task, _ in self._pending if task.done()]
        self._pending = [(task, t) for task, t in self._pending if not task.done()]
        grants = [t.result() for t in done if not t.cancelled() and t.exception() is None]
        return sorted(grants, key=lambda g: g.grant_id)

    async def release_and_next(self, grant: Grant, inp: int = 10, out: int = 10) -> Grant:
        self.queue.release(grant, inp, out)
        (nxt,) = await self.new_grants()
        return nxt


async def test_acquire_is_immediate_below_capacity_and_waits_at_capacity() -> None:
    pool = Pool(max_in_flight=2)
    g1 = await pool.queue.acquire(pool.ticket("a"))
    await pool.queue.acquire(pool.ticket("b"))
    waiting = pool.submit("c")
    assert await pool.new_grants() == [] and pool.queue.num_waiting == 1
    pool.queue.release(g1, 10, 5)
    assert [g.ticket.tenant_id for g in await pool.new_grants()] == ["c"]
    assert waiting.done() and pool.queue.in_flight == 2 and pool.queue.num_waiting == 0


async def test_premium_is_granted_before_standard_before_free() -> None:
    pool = Pool()
    grant = await pool.queue.acquire(pool.ticket("x"))
    for tier in (Tier.FREE, Tier.STANDARD, Tier.PREMIUM):
        pool.submit(tier.value, tier)
    await pool.new_grants()
    order = []
    for _ in range(3):
        grant = await pool.release_and_next(grant)
        order.append(grant.ticket.tier)
    assert order == [Tier.PREMIUM, Tier.STANDARD, Tier.FREE]


async def test_requests_of_one_tenant_are_granted_in_arrival_order() -> None:
    pool = Pool()
    grant = await pool.queue.acquire(pool.ticket("x"))
    tickets = [pool.submit("a") for _ in range(5)]
    await pool.new_grants()
    order = []
    for _ in tickets:
        grant = await pool.release_and_next(grant)
        order.append(grant)
    assert order == [t.result() for t in tickets]


async def test_aging_lets_an_old_free_request_through_eventually() -> None:
    pool = Pool(aging_s=10.0)
    grant = await pool.queue.acquire(pool.ticket("p", Tier.PREMIUM))
    free = pool.submit("f", Tier.FREE)
    await pool.new_grants()
    # A steady premium stream: a fresh premium request always waits beside the free one.
    for second in range(1, 60):
        pool.clock.now = float(second)
        pool.submit("p", Tier.PREMIUM)
        await pool.settle()
        grant = await pool.release_and_next(grant)
        if grant.ticket.tier is Tier.FREE:
            break
    # One tier per 10 s: free ties premium at 20 s (the higher tier wins) and passes at 30 s.
    assert free.done() and free.result() is grant
    assert grant.queue_time_s == 30.0


@pytest.mark.parametrize("max_in_flight", [1, 4])
async def test_heavy_and_light_tenants_service_gap_stays_within_vtc_bound(
    max_in_flight: int,
) -> None:
    """Both standard tenants always backlogged; the engine finishes requests out of order."""
    rng = random.Random(max_in_flight)
    pool = Pool(max_in_flight=max_in_flight)
    shapes = {"heavy": (800, 400), "light": (30, 20)}  # max (input, output) tokens
    weights = pool.queue.config
    max_cost = max(weights.input_weight * i + weights.output_weight * o for i, o in shapes.values())
    # The paper's bound is 2·(w_in·L_in + w_out·M), M the output tokens a batch holds.
    bound = 2 * max_in_flight * max_cost
    served = dict.fromkeys(shapes, 0.0)
    count = dict.fromkeys(shapes, 0)
    for tenant in shapes:
        for _ in range(2 * max_in_flight):
            pool.submit(tenant, est_in=shapes[tenant][0])
    held = await pool.new_grants()
    max_gap = 0.0
    for step in range(3_000):
        pool.clock.now = float(step)
        assert pool.num_waiting("heavy") > 0 and pool.num_waiting("light") > 0
        grant = held.pop(rng.randrange(len(held)))
        tenant = grant.ticket.tenant_id
        max_in, max_out = shapes[tenant]
        inp, out = rng.randint(max_in // 2, max_in), rng.randint(1, max_out)
        pool.queue.release(grant, inp, out)
        served[tenant] += weights.input_weight * inp + weights.output_weight * out
        count[tenant] += 1
        new = await pool.new_grants()
        held += new
        for g in new:  # keep both tenants backlogged
            pool.submit(g.ticket.tenant_id, est_in=shapes[g.ticket.tenant_id][0])
        await pool.settle()
        max_gap = max(max_gap, abs(served["heavy"] - served["light"]))
    assert max_gap <= bound
    # Fair share in weighted tokens means many more light requests than heavy ones.
    assert count["light"] > 10 * count["heavy"]


async def test_tenant_returning_from_idle_gets_no_banked_credit() -> None:
    pool = Pool()
    grant = await pool.queue.acquire(pool.ticket("busy"))
    for _ in range(20):
        pool.submit("busy")
    await pool.new_grants()
    for _ in range(10):  # "busy" alone is served a while; "idle" sends nothing
        grant = await pool.release_and_next(grant, 100, 100)
    pool.submit("idle")
    for _ in range(5):
        pool.submit("idle")
    await pool.new_grants()
    counters = pool.queue.stats().counters[Tier.STANDARD]
    assert counters["idle"] >= counters["busy"] > 0
    # Lifted to the busy tenant's counter, it alternates instead of taking a long burst.
    turns = []
    for _ in range(8):
        grant = await pool.release_and_next(grant, 100, 100)
        turns.append(grant.ticket.tenant_id)
    assert turns.count("idle") <= 5 and "busy" in turns[:2]


async def test_full_tier_queue_raises_queue_full_with_retry_after() -> None:
    pool = Pool(max_waiting_per_tier={Tier.FREE: 2, Tier.STANDARD: 10, Tier.PREMIUM: 10})
    await pool.queue.acquire(pool.ticket("x"))
    pool.submit("f", Tier.FREE)
    pool.submit("f", Tier.FREE)
    await pool.new_grants()
    with pytest.raises(QueueFull) as raised:
        await pool.queue.acquire(pool.ticket("f", Tier.FREE))
    assert raised.value.tier is Tier.FREE and raised.value.retry_after_s >= 1.0
    pool.submit("s", Tier.STANDARD)  # other tiers still queue
    await pool.new_grants()
    stats = pool.queue.stats()
    assert stats.waiting == {Tier.FREE: 2, Tier.STANDARD: 1, Tier.PREMIUM: 0}
    assert stats.rejected[Tier.FREE] == 1


async def test_retry_after_follows_the_recent_service_rate() -> None:
    pool = Pool(max_waiting_per_tier={Tier.FREE: 1, Tier.STANDARD: 10, Tier.PREMIUM: 10})
    for second in range(5):  # 100 weighted tokens served per second
        pool.clock.now = float(second)
        grant = await pool.queue.acquire(pool.ticket("x"))
        pool.queue.release(grant, 100, 0)
    await pool.queue.acquire(pool.ticket("x"))
    pool.submit("f", Tier.FREE, est_in=500)  # 500 + 2·10 weighted tokens waiting
    pool.submit("s", Tier.STANDARD, est_in=280)  # 280 + 2·10 ahead of free as well
    await pool.new_grants()
    with pytest.raises(QueueFull) as raised:
        await pool.queue.acquire(pool.ticket("f", Tier.FREE))
    assert raised.value.retry_after_s == pytest.approx(8.2)


async def test_lowest_tier_is_shed_first_under_global_overload() -> None:
    pool = Pool(max_waiting=3)
    await pool.queue.acquire(pool.ticket("x"))
    f1, f2 = pool.submit("f", Tier.FREE), pool.submit("f", Tier.FREE)
    s1 = pool.submit("s", Tier.STANDARD)
    await pool.new_grants()
    p1 = pool.submit("p", Tier.PREMIUM)  # evicts the newest free request
    await pool.new_grants()
    assert f2.done() and isinstance(f2.exception(), Shed) and not f1.done()
    s2 = pool.submit("s", Tier.STANDARD)  # evicts the remaining free request
    await pool.new_grants()
    assert isinstance(f1.exception(), Shed)
    assert f1.exception().retry_after_s >= 1.0  # type: ignore[union-attr]
    # Nothing below standard waits any more: new standard and free requests are shed.
    with pytest.raises(Shed):
        await pool.queue.acquire(pool.ticket("s", Tier.STANDARD))
    with pytest.raises(Shed):
        await pool.queue.acquire(pool.ticket("f", Tier.FREE))
    assert not any(t.done() for t in (s1, p1, s2))
    stats = pool.queue.stats()
    assert stats.shed == {Tier.FREE: 3, Tier.STANDARD: 1, Tier.PREMIUM: 0}
    assert stats.waiting == {Tier.FREE: 0, Tier.STANDARD: 2, Tier.PREMIUM: 1}


async def test_cancelled_waiter_leaves_no_trace() -> None:
    pool = Pool()
    grant = await pool.queue.acquire(pool.ticket("x"))
    gone = pool.submit("a")
    await pool.new_grants()
    gone.cancel()
    await pool.new_grants()
    assert gone.cancelled() and pool.queue.num_waiting == 0
    assert pool.queue.stats().waiting == dict.fromkeys(Tier, 0)
    pool.queue.release(grant, 10, 10)
    assert pool.queue.in_flight == 0  # nobody was granted the slot
    assert (await pool.queue.acquire(pool.ticket("b"))).ticket.tenant_id == "b"


async def test_slot_freed_before_a_cancelled_waiter_cleans_up_skips_it() -> None:
    pool = Pool()
    grant = await pool.queue.acquire(pool.ticket("x"))
    gone = pool.submit("a")
    nxt = pool.submit("b")
    await pool.new_grants()
    gone.cancel()
    pool.queue.release(grant, 10, 10)  # before the cancelled task has run at all
    grants = await pool.new_grants()
    assert gone.cancelled() and nxt.done()
    assert [g.ticket.tenant_id for g in grants] == ["b"]
    assert pool.queue.in_flight == 1 and pool.queue.num_waiting == 0


async def test_waiter_cancelled_just_after_its_grant_gives_the_slot_back() -> None:
    pool = Pool()
    grant = await pool.queue.acquire(pool.ticket("x"))
    late = pool.submit("a")
    nxt = pool.submit("b")
    await pool.new_grants()
    pool.queue.release(grant, 10, 10)  # grants to "a" synchronously...
    late.cancel()  # ...whose client disconnects before its task resumes
    grants = await pool.new_grants()
    assert late.cancelled()
    assert [g.ticket.tenant_id for g in grants] == ["b"] and nxt.done()
    assert pool.queue.in_flight == 1
    # "a" never reached the engine: its estimated input charge was refunded.
    assert pool.queue.stats().counters[Tier.STANDARD]["a"] == 0


async def test_slot_is_released_when_the_body_raises_and_records_usage() -> None:
    pool = Pool()
    with pytest.raises(RuntimeError):
        async with pool.queue.slot(pool.ticket("a", est_in=50)) as s:
            s.input_tokens, s.output_tokens = 40, 7
            raise RuntimeError("engine failed")
    assert pool.queue.in_flight == 0
    assert pool.queue.stats().counters[Tier.STANDARD]["a"] == 40 + 2 * 7


async def test_release_corrects_the_estimate_and_is_idempotent() -> None:
    pool = Pool()
    grant = await pool.queue.acquire(pool.ticket("a", est_in=100))
    assert pool.queue.stats().counters[Tier.STANDARD]["a"] == 100  # estimate at grant
    pool.queue.release(grant, 80, 30)
    pool.queue.release(grant, 80, 30)
    assert pool.queue.stats().counters[Tier.STANDARD]["a"] == 80 + 2 * 30
    assert pool.queue.in_flight == 0


async def test_noisy_neighbour_is_queued_one_tier_lower_until_its_cooldown_ends() -> None:
    pool = Pool(demotion_cooldown_s=60.0)
    pool.queue.apply(NoisyNeighborEvent("hog", share=0.8, others_ttft_p95_ratio=2.0))
    assert pool.queue.stats().demoted_until == {"hog": 60.0}
    grant = await pool.queue.acquire(pool.ticket("x"))
    pool.submit("s", Tier.STANDARD)
    pool.submit("hog", Tier.PREMIUM)
    await pool.new_grants()
    first = await pool.release_and_next(grant)
    second = await pool.release_and_next(first)
    assert [first.ticket.tenant_id, second.ticket.tenant_id] == ["s", "hog"]
    assert second.tier is Tier.STANDARD and second.ticket.tier is Tier.PREMIUM
    pool.clock.now = 61.0
    pool.submit("s", Tier.STANDARD)
    pool.submit("hog", Tier.PREMIUM)
    await pool.new_grants()
    third = await pool.release_and_next(second)
    assert third.ticket.tenant_id == "hog" and third.tier is Tier.PREMIUM
    assert pool.queue.stats().demoted_until == {}


async def test_slots_never_leak_under_random_cancellations_and_failures() -> None:
    rng = random.Random(1234)
    pool = Pool(
        max_in_flight=3,
        max_waiting=12,
        max_waiting_per_tier={Tier.FREE: 4, Tier.STANDARD: 8, Tier.PREMIUM: 8},
    )
    outcomes: dict[str, int] = {}
    in_body = 0

    async def client(tenant: str, tier: Tier) -> None:
        nonlocal in_body
        try:
            async with pool.queue.slot(pool.ticket(tenant, tier, rng.randint(1, 50))) as s:
                in_body += 1
                assert in_body <= 3
                try:
                    for _ in range(rng.randint(0, 4)):
                        await asyncio.sleep(0)
                    if rng.random() < 0.1:
                        raise RuntimeError("engine failed")
                    s.output_tokens = rng.randint(1, 20)
                finally:
                    in_body -= 1
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except Overloaded as e:
            outcomes[type(e).__name__] = outcomes.get(type(e).__name__, 0) + 1
        except RuntimeError:
            outcomes["failed"] = outcomes.get("failed", 0) + 1

    tasks: list[asyncio.Task[None]] = []
    for _ in range(300):
        pool.clock.now += rng.random()
        for _ in range(rng.randint(0, 6)):  # bursts overflow the queue now and then
            tenant, tier = f"t{rng.randint(0, 7)}", rng.choice(list(Tier))
            tasks.append(asyncio.get_running_loop().create_task(client(tenant, tier)))
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        for task in rng.sample(tasks, k=min(len(tasks), rng.randint(0, 2))):
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(t.cancelled() for t in tasks)
    assert pool.queue.in_flight == 0 and pool.queue.num_waiting == 0
    assert pool.queue.stats().waiting == dict.fromkeys(Tier, 0)
    # Every outcome happened, so every path was exercised.
    assert cancelled > 0 and {"ok", "failed", "QueueFull", "Shed"} <= outcomes.keys()
    assert (await pool.queue.acquire(pool.ticket("after"))).queue_time_s == 0


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ConfigError):
        FairQueueConfig(max_in_flight=0)
    with pytest.raises(ConfigError):
        FairQueueConfig(aging_s=0)
    with pytest.raises(ConfigError):
        FairQueueConfig(max_waiting_per_tier={Tier.FREE: 1})


def _ticket(rid: str, tenant: str, tier: Tier) -> Ticket:
    return Ticket(rid, tenant, tier, 10, 10, arrival_time=0.0)


async def test_premium_headroom_lets_premium_in_while_lower_tiers_hold_every_slot() -> None:
    queue = FairQueue(FairQueueConfig(max_in_flight=2, priority_headroom={Tier.PREMIUM: 1}))
    free = [await queue.acquire(_ticket(f"f{i}", "free-t", Tier.FREE)) for i in range(2)]
    waiting_free = asyncio.create_task(queue.acquire(_ticket("f2", "free-t", Tier.FREE)))
    await asyncio.sleep(0)
    premium = await asyncio.wait_for(queue.acquire(_ticket("p", "prem-t", Tier.PREMIUM)), 1)
    assert premium.tier is Tier.PREMIUM and queue.in_flight == 3
    assert not waiting_free.done()  # the headroom is premium's, not free's
    queue.release(premium, 1, 1)
    assert not waiting_free.done()
    queue.release(free[0], 1, 1)
    await asyncio.wait_for(waiting_free, 1)
