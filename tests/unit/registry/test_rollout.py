"""Rollout domain rules: sticky routing by request id, shadow share, the plan's checks,
and what `evaluate` decides from two versions' stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenantserve.errors import InvalidRequestError
from tenantserve.registry.rollout import (
    Action,
    GateResult,
    Rollout,
    RolloutPhase,
    RolloutPlan,
    apply,
    route,
    shadow,
)
from tenantserve.registry.rollout_policy import VersionStats, evaluate

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
STABLE, CANDIDATE = "llama@1.0.0", "llama@1.1.0"
IDS = [f"req-{i}" for i in range(10_000)]


def _plan(**kw: Any) -> RolloutPlan:
    options: dict[str, Any] = {"shadow_percent": 0.0, "step_seconds": 60, "min_requests": 50}
    options.update(kw)
    return RolloutPlan(model="llama", stable_ref=STABLE, candidate_ref=CANDIDATE, **options)


def _stats(requests: int, errors: int = 0, latency_s: float = 0.1) -> VersionStats:
    s = VersionStats()
    for i in range(requests):
        s.record(latency_s, error=i < errors)
    return s


def _canary_share(rollout: Rollout) -> float:
    return sum(route(rollout, i) == CANDIDATE for i in IDS) / len(IDS)


def test_routing_is_sticky_per_request_id_and_near_the_percent() -> None:
    rollout = Rollout.start(_plan(), NOW)
    assert rollout.percent == 1.0
    first = [route(rollout, i) for i in IDS]
    assert first == [route(rollout, i) for i in IDS]
    assert 0.005 < _canary_share(rollout) < 0.015
    rollout.advance(NOW, "healthy")
    assert rollout.percent == 10.0
    assert 0.09 < _canary_share(rollout) < 0.11
    # A request on the canary at 1% stays on it at 10%.
    assert all(
        route(rollout, i) == CANDIDATE for i, r in zip(IDS, first, strict=True) if r == CANDIDATE
    )


def test_routing_never_sends_traffic_to_the_candidate_in_shadow_or_after_a_rollback() -> None:
    rollout = Rollout.start(_plan(shadow_percent=20.0), NOW)
    assert rollout.phase is RolloutPhase.SHADOW
    assert _canary_share(rollout) == 0
    rollout.roll_back(NOW, "bad")
    assert _canary_share(rollout) == 0
    done = Rollout.start(_plan(), NOW)
    done.finish(NOW, "ok")
    assert _canary_share(done) == 1


def test_shadow_mirrors_about_its_percent_and_only_in_shadow() -> None:
    rollout = Rollout.start(_plan(shadow_percent=20.0), NOW)
    mirrored = [shadow(rollout, i) for i in IDS]
    assert mirrored == [shadow(rollout, i) for i in IDS]
    assert 0.18 < sum(mirrored) / len(IDS) < 0.22
    rollout.advance(NOW, "healthy")
    assert not any(shadow(rollout, i) for i in IDS)


@pytest.mark.parametrize(
    "bad",
    [
        {"canary_steps": (1, 10)},
        {"canary_steps": (10, 1, 100)},
        {"canary_steps": ()},
        {"shadow_percent": 101},
        {"p95_latency_margin": 0.5},
        {"min_requests": 0},
        {"error_rate_margin": -0.1},
        {"candidate_ref": STABLE},
    ],
)
def test_a_plan_with_impossible_options_is_refused(bad: dict[str, Any]) -> None:
    options = {"model": "llama", "stable_ref": STABLE, "candidate_ref": CANDIDATE, **bad}
    with pytest.raises(InvalidRequestError):
        RolloutPlan(**options)


def test_a_candidate_with_more_errors_than_the_margin_is_rolled_back_before_the_step_ends() -> None:
    rollout = Rollout.start(_plan(), NOW)
    decision = evaluate(rollout, _stats(100, errors=1), _stats(50, errors=5), NOW)
    assert decision.action is Action.ROLLBACK
    assert "error rate 10.00%" in decision.reason and "canary 1%" in decision.reason
    assert apply(rollout, decision, NOW)
    assert rollout.phase is RolloutPhase.ROLLED_BACK and rollout.percent == 0
    assert rollout.history[-1].reason == decision.reason


def test_errors_within_the_margin_do_not_roll_back() -> None:
    rollout = Rollout.start(_plan(), NOW)
    later = NOW + timedelta(seconds=61)
    decision = evaluate(rollout, _stats(100, errors=1), _stats(100, errors=2), later)
    assert decision.action is Action.ADVANCE


def test_a_slower_candidate_p95_is_rolled_back() -> None:
    rollout = Rollout.start(_plan(), NOW)
    decision = evaluate(rollout, _stats(100, latency_s=0.1), _stats(50, latency_s=0.13), NOW)
    assert decision.action is Action.ROLLBACK and "p95 latency 130 ms" in decision.reason
    ok = evaluate(rollout, _stats(100, latency_s=0.1), _stats(50, latency_s=0.11), NOW)
    assert ok.action is Action.HOLD


def test_too_few_requests_never_roll_back_and_hold_the_step() -> None:
    rollout = Rollout.start(_plan(), NOW)
    later = NOW + timedelta(seconds=120)
    decision = evaluate(rollout, _stats(100), _stats(10, errors=10), later)
    assert decision.action is Action.HOLD and "10 of 50" in decision.reason


def test_a_healthy_step_advances_after_its_duration_and_finishes_at_100() -> None:
    rollout = Rollout.start(_plan(), NOW)
    assert evaluate(rollout, _stats(100), _stats(60), NOW).action is Action.HOLD
    t = NOW
    for expected in (10.0, 100.0):
        t += timedelta(seconds=60)
        decision = evaluate(rollout, _stats(100), _stats(60), t)
        assert decision.action is Action.ADVANCE
        apply(rollout, decision, t)
        assert rollout.percent == expected and rollout.step_started_at == t
    t += timedelta(seconds=60)
    # At 100% the stable version gets no traffic: no p95 bound, error rate 0.
    decision = evaluate(rollout, VersionStats(), _stats(60), t)
    assert decision.action is Action.FINISH
    apply(rollout, decision, t)
    assert rollout.phase is RolloutPhase.DONE and not rollout.is_active
    assert [(e.phase, e.percent) for e in rollout.history] == [
        (RolloutPhase.CANARY, 1.0),
        (RolloutPhase.CANARY, 10.0),
        (RolloutPhase.CANARY, 100.0),
        (RolloutPhase.DONE, 100.0),
    ]
    with pytest.raises(InvalidRequestError, match="over"):
        rollout.advance(t, "again")


def test_shadow_divergence_over_the_limit_rolls_back() -> None:
    rollout = Rollout.start(_plan(shadow_percent=5.0, max_divergence_rate=0.1), NOW)
    candidate = VersionStats()
    for i in range(50):
        candidate.record(0.1, error=False, diverged=i < 10)
    decision = evaluate(rollout, _stats(100), candidate, NOW)
    assert decision.action is Action.ROLLBACK and "diverged" in decision.reason


def test_the_golden_set_gate_decides_before_the_first_stage_is_left() -> None:
    rollout = Rollout.start(_plan(shadow_percent=5.0, require_golden_set=True), NOW)
    later = NOW + timedelta(seconds=60)
    assert evaluate(rollout, _stats(100), _stats(50), later).action is Action.GATE
    failed = evaluate(rollout, _stats(100), _stats(50), later, GateResult(False, "12/20"))
    assert failed.action is Action.ROLLBACK and "12/20" in failed.reason
    passed = evaluate(rollout, _stats(100), _stats(50), later, GateResult(True, "20/20"))
    assert passed.action is Action.ADVANCE
    apply(rollout, passed, later)
    # Past the first stage the gate is not asked again.
    after = later + timedelta(seconds=60)
    assert evaluate(rollout, _stats(100), _stats(50), after).action is Action.ADVANCE


def test_p95_is_the_nearest_rank_of_successful_requests() -> None:
    s = VersionStats()
    for i in range(1, 101):
        s.record(i / 100, error=False)
    s.record(99.0, error=True)
    assert s.p95_latency_s == 0.95
    assert s.requests == 101 and s.errors == 1
    assert VersionStats().p95_latency_s is None and VersionStats().error_rate == 0
