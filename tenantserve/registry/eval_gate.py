"""The eval gate, pure: does a version's latest eval score regress?

    regressed  score < the baseline's score − `regression_threshold` (the baseline: the
               stable version's latest result of the same set, same digest), or
               score < the floor (the set's own `min_score`, else `min_score` here)
    missing    the set has no result for the version yet (blocks when `block_on_missing`)
    passed     otherwise; a set without a comparable baseline is judged by its floor only

The rollout reads the verdict as a `GateResult` (`rollout_policy.evaluate`'s `eval_gate`): a
candidate whose verdict did not pass cannot be promoted to, or finish at, 100%.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from tenantserve.errors import InvalidRequestError
from tenantserve.registry.evals import EvalResult, EvalSet
from tenantserve.registry.rollout import GateResult

DEFAULT_REGRESSION_THRESHOLD = 0.05


@dataclass(frozen=True)
class EvalGateConfig:
    """How far below the stable version's score a candidate may fall, the default floor,
    and whether a missing result blocks."""

    regression_threshold: float = DEFAULT_REGRESSION_THRESHOLD
    min_score: float | None = None
    block_on_missing: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.regression_threshold <= 1:
            raise InvalidRequestError("regression_threshold must be between 0 and 1")
        if self.min_score is not None and not 0 <= self.min_score <= 1:
            raise InvalidRequestError("min_score must be between 0 and 1")


class Verdict(StrEnum):
    PASSED = "passed"
    REGRESSED = "regressed"
    MISSING = "missing"


class SetVerdict(NamedTuple):
    """One set's verdict on one version, and why."""

    set_name: str
    verdict: Verdict
    reason: str


def judge_result(
    eval_set: EvalSet,
    result: EvalResult | None,
    baseline: EvalResult | None,
    cfg: EvalGateConfig,
) -> SetVerdict:
    """The verdict of `eval_set` given the version's latest `result` and the stable
    version's latest `baseline` (both ignored unless they scored this set's digest)."""
    name = eval_set.name
    if result is None or result.set_digest != eval_set.digest:
        return SetVerdict(name, Verdict.MISSING, f"{name}: no result yet")
    floor = eval_set.min_score if eval_set.min_score is not None else cfg.min_score
    if floor is not None and result.score < floor:
        return SetVerdict(
            name,
            Verdict.REGRESSED,
            f"{result.summary()} is below the floor {floor:.2f}",
        )
    if baseline is not None and baseline.set_digest == eval_set.digest:
        limit = baseline.score - cfg.regression_threshold
        if result.score < limit - 1e-9:
            return SetVerdict(
                name,
                Verdict.REGRESSED,
                f"{result.summary()} regressed from {baseline.ref}'s {baseline.score:.2f} "
                f"by more than {cfg.regression_threshold:.2f}",
            )
    return SetVerdict(name, Verdict.PASSED, result.summary())


MISSING_PREFIX = "eval missing"


def judge(
    sets: Sequence[EvalSet],
    results: Mapping[str, EvalResult],
    baselines: Mapping[str, EvalResult],
    cfg: EvalGateConfig,
) -> GateResult:
    """The gate over every set of a version (`results` / `baselines` by set name): fails
    on any regression, and on a missing result when `block_on_missing`."""
    if not sets:
        return GateResult(True, "no eval set")
    verdicts = [judge_result(s, results.get(s.name), baselines.get(s.name), cfg) for s in sets]
    regressed = [v.reason for v in verdicts if v.verdict is Verdict.REGRESSED]
    missing = [v.reason for v in verdicts if v.verdict is Verdict.MISSING]
    if regressed:
        return GateResult(False, "eval regression: " + "; ".join(regressed))
    if missing and cfg.block_on_missing:
        return GateResult(False, f"{MISSING_PREFIX}: " + "; ".join(missing))
    return GateResult(True, "; ".join(v.reason for v in verdicts))
