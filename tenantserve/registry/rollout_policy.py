"""The promotion policy of a rollout, pure: what one step's stats say to do next.

    VersionStats   what one version did during a step: requests, errors, latencies,
                   shadow answers that diverged from the stable version's
    evaluate       the `Decision` for an active rollout: roll back on a regression, hold
                   until the step has run long enough and seen enough candidate
                   requests, run the golden-set gate, then advance or finish
    eval_block     why the candidate may not take all traffic yet (its eval verdict)

Reads nothing and writes nothing: `rollout_service.py` gathers the stats, the clock and the
eval verdicts, and carries the decision out with `rollout.apply`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from tenantserve.registry.rollout import Action, Decision, GateResult, Rollout, RolloutPlan

# Latency samples kept per version per step (the newest; older ones are dropped).
MAX_LATENCY_SAMPLES = 10_000


@dataclass
class VersionStats:
    """What one version did during one step: requests, errors, latencies (successes only,
    the newest `MAX_LATENCY_SAMPLES`), and how many shadow answers diverged from stable's."""

    requests: int = 0
    errors: int = 0
    divergences: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def record(self, latency_s: float, error: bool, diverged: bool = False) -> None:
        """Count one request (not thread-safe on its own; the service holds a lock)."""
        self.requests += 1
        if error:
            self.errors += 1
        else:
            self.latencies_s.append(latency_s)
            if len(self.latencies_s) > MAX_LATENCY_SAMPLES:
                del self.latencies_s[: len(self.latencies_s) - MAX_LATENCY_SAMPLES]
        if diverged:
            self.divergences += 1

    def merge(self, other: VersionStats) -> None:
        """Add `other`'s counts and samples to these."""
        self.requests += other.requests
        self.errors += other.errors
        self.divergences += other.divergences
        self.latencies_s.extend(other.latencies_s)
        if len(self.latencies_s) > MAX_LATENCY_SAMPLES:
            del self.latencies_s[: len(self.latencies_s) - MAX_LATENCY_SAMPLES]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def divergence_rate(self) -> float:
        return self.divergences / self.requests if self.requests else 0.0

    @property
    def p95_latency_s(self) -> float | None:
        """Nearest-rank 95th percentile of the latency samples; None without samples."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def summary(self) -> str:
        """`N requests, error rate E%, p95 P ms`: these stats in a decision's reason."""
        p95 = self.p95_latency_s
        p95_text = "n/a" if p95 is None else f"{p95 * 1000:.0f} ms"
        return f"{self.requests} requests, error rate {self.error_rate:.2%}, p95 {p95_text}"


def evaluate(
    rollout: Rollout,
    stable: VersionStats,
    candidate: VersionStats,
    now: datetime,
    gate: GateResult | None = None,
    eval_gate: GateResult | None = None,
) -> Decision:
    """What to do with an active rollout given this step's stats.

    ROLLBACK as soon as the candidate has `min_requests` and regresses (error rate above
    stable's + margin, p95 above stable's × margin, or shadow divergence above the limit);
    HOLD until the step has run `step_seconds` and seen `min_requests` candidate requests;
    then GATE (when a golden-set eval is required at the first stage and `gate` is None) or
    ROLLBACK on a failed gate; HOLD when the next step takes all traffic and `eval_gate`
    (the candidate's stored eval verdict, `eval_gate.py`) did not pass; FINISH at the last
    step; ADVANCE otherwise. A stable version without requests counts as error rate 0 and
    no latency bound."""
    if not rollout.is_active:
        return Decision(Action.HOLD, f"the rollout is {rollout.phase.value}")
    plan = rollout.plan
    label = rollout.step_label
    if candidate.requests >= plan.min_requests:
        regression = _regression(plan, stable, candidate)
        if regression is not None:
            return Decision(Action.ROLLBACK, f"{label}: {regression}")
    elapsed_s = (now - rollout.step_started_at).total_seconds()
    if elapsed_s < plan.step_seconds:
        left_s = plan.step_seconds - elapsed_s
        return Decision(Action.HOLD, f"{label}: {left_s:.0f} s of the step left")
    if candidate.requests < plan.min_requests:
        return Decision(
            Action.HOLD,
            f"{label}: {candidate.requests} of {plan.min_requests} candidate requests seen",
        )
    if plan.require_golden_set and rollout.at_first_stage:
        if gate is None:
            return Decision(Action.GATE, f"{label}: the golden-set eval decides")
        if not gate.passed:
            return Decision(Action.ROLLBACK, f"{label}: golden-set eval failed: {gate.detail}")
    blocked = eval_block(rollout, eval_gate)
    if blocked is not None:
        return Decision(Action.HOLD, f"{label}: {blocked}")
    healthy = f"{label} healthy: candidate {candidate.summary()}; stable {stable.summary()}" + (
        f"; golden set: {gate.detail}" if gate is not None else ""
    )
    if rollout.at_last_step:
        return Decision(Action.FINISH, healthy)
    return Decision(Action.ADVANCE, healthy)


def eval_block(rollout: Rollout, eval_gate: GateResult | None) -> str | None:
    """Why the candidate may not take all traffic now (its next step is 100% or done and
    its eval verdict did not pass), or None; no verdict (None) blocks nothing."""
    if eval_gate is None or eval_gate.passed or not rollout.next_takes_all:
        return None
    return f"{rollout.plan.candidate_ref} may not take all traffic: {eval_gate.detail}"


def _regression(plan: RolloutPlan, stable: VersionStats, candidate: VersionStats) -> str | None:
    limit = stable.error_rate + plan.error_rate_margin
    if candidate.error_rate > limit:
        return (
            f"candidate error rate {candidate.error_rate:.2%} over {candidate.requests} "
            f"requests exceeds stable's {stable.error_rate:.2%} + "
            f"{plan.error_rate_margin:.2%}"
        )
    stable_p95, candidate_p95 = stable.p95_latency_s, candidate.p95_latency_s
    if (
        stable_p95 is not None
        and candidate_p95 is not None
        and candidate_p95 > stable_p95 * plan.p95_latency_margin
    ):
        return (
            f"candidate p95 latency {candidate_p95 * 1000:.0f} ms exceeds stable's "
            f"{stable_p95 * 1000:.0f} ms × {plan.p95_latency_margin:g}"
        )
    max_divergence = plan.max_divergence_rate
    if max_divergence is not None and candidate.divergence_rate > max_divergence:
        return (
            f"{candidate.divergence_rate:.2%} of shadow answers diverged from stable's "
            f"(limit {max_divergence:.2%})"
        )
    return None
