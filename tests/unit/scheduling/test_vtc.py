"""VirtualTokenCounter: weighted charging, least-counter selection, lifting on return."""

from __future__ import annotations

import random

from tenantserve.scheduling.vtc import VirtualTokenCounter


def test_charge_weighs_output_twice_input() -> None:
    vtc = VirtualTokenCounter(input_weight=1, output_weight=2)
    assert vtc.charge("a", input_tokens=10, output_tokens=5) == 20
    assert vtc.charge("a", input_tokens=-4) == 16  # a correction of an over-estimate
    assert vtc.counter("a") == 16
    assert vtc.counter("never-seen") == 0


def test_backlogged_tenant_with_least_counter_is_selected() -> None:
    vtc = VirtualTokenCounter()
    for t in ("a", "b", "c"):
        vtc.enter_backlog(t)
    vtc.charge("a", 100)
    vtc.charge("c", 50)
    assert vtc.select() == "b"
    vtc.leave_backlog("b")
    assert vtc.select() == "c"
    assert vtc.counters() == {"a": 100, "b": 0, "c": 50}


def test_selection_ignores_tenants_that_are_not_backlogged() -> None:
    vtc = VirtualTokenCounter()
    vtc.enter_backlog("a")
    vtc.charge("a", 100)
    vtc.charge("idle", 0)
    assert vtc.select() == "a"
    vtc.leave_backlog("a")
    assert vtc.select() is None


def test_ties_go_to_the_tie_break_then_the_tenant_id() -> None:
    vtc = VirtualTokenCounter()
    for t in ("b", "a", "c"):
        vtc.enter_backlog(t)
    assert vtc.select() == "a"
    assert vtc.select(tie_break={"a": 3, "b": 1, "c": 2}.__getitem__) == "b"


def test_returning_tenant_is_lifted_to_least_backlogged_counter() -> None:
    vtc = VirtualTokenCounter()
    vtc.enter_backlog("busy1")
    vtc.enter_backlog("busy2")
    vtc.charge("busy1", 5_000)
    vtc.charge("busy2", 3_000)
    vtc.enter_backlog("returning")  # idle all along: W 0 would bank 3,000 of credit
    assert vtc.counter("returning") == 3_000


def test_lift_never_lowers_a_counter_and_is_idempotent() -> None:
    vtc = VirtualTokenCounter()
    vtc.enter_backlog("a")
    vtc.charge("rich", 9_000)
    vtc.enter_backlog("rich")
    assert vtc.counter("rich") == 9_000
    vtc.charge("a", 10_000)
    vtc.enter_backlog("rich")  # already backlogged: no second lift
    assert vtc.counter("rich") == 9_000


def test_return_to_an_empty_backlog_lifts_to_the_last_tenant_that_left() -> None:
    vtc = VirtualTokenCounter()
    vtc.enter_backlog("a")
    vtc.charge("a", 700)
    vtc.leave_backlog("a")
    vtc.enter_backlog("b")
    assert vtc.counter("b") == 700


def test_service_gap_between_backlogged_tenants_is_bounded() -> None:
    """One request at a time, random sizes: |W_i - W_j| never exceeds the largest charge."""
    rng = random.Random(7)
    vtc = VirtualTokenCounter(input_weight=1, output_weight=2)
    sizes = {"heavy": (2_000, 1_000), "light": (50, 20), "mid": (400, 200)}
    bound = max(vtc.cost(i, o) for i, o in sizes.values())
    for t in sizes:
        vtc.enter_backlog(t)
    served = dict.fromkeys(sizes, 0.0)
    for _ in range(5_000):
        chosen = vtc.select()
        assert chosen is not None
        max_in, max_out = sizes[chosen]
        input_tokens, output_tokens = rng.randint(1, max_in), rng.randint(1, max_out)
        vtc.charge(chosen, input_tokens, output_tokens)
        served[chosen] += vtc.cost(input_tokens, output_tokens)
        assert max(served.values()) - min(served.values()) <= bound
