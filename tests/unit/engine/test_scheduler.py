from __future__ import annotations

import itertools

from tenantserve.engine.block_pool import BlockPool
from tenantserve.engine.config import SchedulerConfig
from tenantserve.engine.request import EngineRequest, SamplingParams, Sequence
from tenantserve.engine.scheduler import Scheduler, SchedulerOutput
from tenantserve.tiers import Tier

BUDGET = {Tier.FREE: 0.3, Tier.STANDARD: 0.3, Tier.PREMIUM: 0.3}
_clock = itertools.count()


def make_seq(rid: str, tier: Tier, num_prompt: int, tenant: str | None = None) -> Sequence:
    req = EngineRequest(
        request_id=rid,
        prompt_token_ids=tuple(range(1, num_prompt + 1)),
        sampling=SamplingParams(max_tokens=100),
        tenant_id=tenant or f"tenant-{rid}",
        tier=tier,
        arrival_time=float(next(_clock)),
    )
    return Sequence(req)


def run_step(sched: Scheduler) -> SchedulerOutput:
    """Plan a step and pretend the model ran it, sampling token 7 where a token is due."""
    plan = sched.schedule()
    sampled = {s.seq.request_id: 7 for s in plan.scheduled if s.samples}
    sched.update(plan, sampled)
    return plan


def make_scheduler(num_blocks: int, block_size: int = 4, budget: int = 64) -> Scheduler:
    pool = BlockPool(num_blocks, block_size, BUDGET)
    return Scheduler(SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=budget), pool, None)


def test_long_prompt_is_prefilled_in_chunks_within_the_token_budget() -> None:
    sched = make_scheduler(num_blocks=64, budget=16)
    seq = make_seq("a", Tier.STANDARD, 40)
    sched.add(seq)
    chunks = []
    while seq.num_output_tokens == 0:
        plan = run_step(sched)
        assert plan.num_batched_tokens <= 16
        chunks.append(plan.num_batched_tokens)
    assert chunks == [16, 16, 8]


def test_new_requests_join_the_running_batch_every_step() -> None:
    sched = make_scheduler(num_blocks=64)
    sched.add(make_seq("a", Tier.STANDARD, 8))
    run_step(sched)
    sched.add(make_seq("b", Tier.STANDARD, 8))
    plan = run_step(sched)
    assert [s.seq.request_id for s in plan.decodes] == ["a"]
    assert [s.seq.request_id for s in plan.prefills] == ["b"]


def test_waiting_requests_are_admitted_by_tier_then_arrival() -> None:
    sched = make_scheduler(num_blocks=64, budget=8)
    for rid, tier in [("f", Tier.FREE), ("s", Tier.STANDARD), ("p", Tier.PREMIUM)]:
        sched.add(make_seq(rid, tier, 8))
    order: list[str] = []
    for _ in range(4):
        for item in run_step(sched).scheduled:
            if item.seq.request_id not in order:
                order.append(item.seq.request_id)
    assert order == ["p", "s", "f"]


def test_out_of_blocks_preempts_lowest_tier_then_newest() -> None:
    # 12 blocks of 4 tokens; each sequence holds 3 blocks after its 12-token prompt.
    sched = make_scheduler(num_blocks=12)
    seqs = [
        make_seq("std-old", Tier.STANDARD, 12),
        make_seq("free-old", Tier.FREE, 12),
        make_seq("free-new", Tier.FREE, 12),
        make_seq("prem", Tier.PREMIUM, 12),
    ]
    for s in seqs:
        sched.add(s)
    run_step(sched)  # all four prefilled: 12 blocks used
    assert sched.pool.num_available_blocks == 0
    plan = run_step(sched)  # each decode needs a 4th block
    assert plan.preempted[0].request_id == "free-new"
    assert "prem" in [s.seq.request_id for s in plan.decodes]
    assert {s.request_id for s in plan.preempted} <= {"free-new", "free-old"}


def test_preempted_sequence_is_recomputed_and_keeps_its_output() -> None:
    sched = make_scheduler(num_blocks=12)
    low = make_seq("low", Tier.FREE, 12)
    sched.add(low)
    run_step(sched)
    run_step(sched)
    assert low.num_output_tokens == 2
    high = make_seq("high", Tier.PREMIUM, 36)
    sched.add(high)
    plan = run_step(sched)
    assert plan.preempted == [low]
    assert low.num_computed_tokens == 0 and low.block_ids == []
    sched.finish(high)
    while low.num_output_tokens == 2:
        run_step(sched)
    assert low.token_ids[:14] == [*range(1, 13), 7, 7]
    assert low.num_preemptions == 1


def test_waiting_request_does_not_preempt_an_equal_tier() -> None:
    sched = make_scheduler(num_blocks=6)
    a = make_seq("a", Tier.STANDARD, 20)
    sched.add(a)
    run_step(sched)
    b = make_seq("b", Tier.STANDARD, 20)
    sched.add(b)
    plan = run_step(sched)
    assert plan.preempted == []
    assert b in sched.waiting


def test_block_accounting_returns_to_zero_after_finish_and_abort() -> None:
    sched = make_scheduler(num_blocks=32)
    seqs = [make_seq(str(i), Tier.STANDARD, 10 + i) for i in range(4)]
    for s in seqs:
        sched.add(s)
    for _ in range(3):
        run_step(sched)
    sched.finish(seqs[0])  # finished
    sched.finish(seqs[1])  # aborted mid-decode
    sched.finish(seqs[3])
    run_step(sched)
    sched.finish(seqs[2])
    assert sched.pool.num_used_blocks == 0
    assert not sched.has_unfinished()


def test_second_identical_prompt_of_a_tenant_starts_from_cached_blocks() -> None:
    sched = make_scheduler(num_blocks=32)
    first = make_seq("1", Tier.STANDARD, 18, tenant="acme")
    sched.add(first)
    run_step(sched)
    sched.finish(first)
    again = make_seq("2", Tier.STANDARD, 18, tenant="acme")
    other = make_seq("3", Tier.STANDARD, 18, tenant="globex")
    sched.add(again)
    sched.add(other)
    plan = run_step(sched)
    by_id = {s.seq.request_id: s for s in plan.scheduled}
    assert again.num_cached_tokens == 16
    assert by_id["2"].num_new_tokens == 2
    assert other.num_cached_tokens == 0
    assert by_id["3"].num_new_tokens == 18


def test_premium_takes_the_seat_of_the_newest_free_sequence_when_all_seats_are_taken() -> None:
    pool = BlockPool(64, 4, BUDGET)
    sched = Scheduler(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=64), pool, None)
    old, new = make_seq("free-old", Tier.FREE, 8), make_seq("free-new", Tier.FREE, 8)
    sched.add(old)
    sched.add(new)
    run_step(sched)
    premium = make_seq("prem", Tier.PREMIUM, 8)
    sched.add(premium)
    plan = run_step(sched)
    assert plan.preempted == [new]
    assert premium in sched.running and old in sched.running
    standard = make_seq("std", Tier.STANDARD, 8)
    sched.add(standard)
    plan = run_step(sched)
    assert plan.preempted == [old]  # standard outranks free, not premium
    assert len(sched.running) == 2


def test_lower_tiers_sit_out_the_steps_of_a_higher_tiers_prefill() -> None:
    sched = make_scheduler(num_blocks=64, budget=16)
    frees = [make_seq(f"f{i}", Tier.FREE, 4) for i in range(3)]
    for seq in frees:
        sched.add(seq)
    run_step(sched)  # the free prompts prefill; from now on they decode
    premium = make_seq("p", Tier.PREMIUM, 24)
    sched.add(premium)
    steps = []
    while premium.num_output_tokens == 0:
        steps.append([s.seq.request_id for s in run_step(sched).scheduled])
    # Two prefill chunks (16 + 8 tokens) with nobody else in them.
    assert steps == [["p"], ["p"]]
    # Then everyone decodes together again, nothing lost.
    assert sorted(s.seq.request_id for s in run_step(sched).decodes) == ["f0", "f1", "f2", "p"]
    assert all(seq.num_output_tokens == 2 for seq in frees)


def test_an_equal_tier_prefill_does_not_pause_anyone() -> None:
    sched = make_scheduler(num_blocks=64)
    sched.add(make_seq("a", Tier.FREE, 4))
    run_step(sched)
    sched.add(make_seq("b", Tier.FREE, 8))
    plan = run_step(sched)
    assert [s.seq.request_id for s in plan.decodes] == ["a"]
    assert [s.seq.request_id for s in plan.prefills] == ["b"]
