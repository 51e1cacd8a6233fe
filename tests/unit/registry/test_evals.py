"""Eval sets, the domain: each scoring rule, the checks of an uploaded set, the regression
verdict, and what a rollout does with the candidate's eval verdict."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenantserve.errors import InvalidRequestError
from tenantserve.registry.default_model import default_golden_set
from tenantserve.registry.eval_gate import EvalGateConfig, Verdict, judge, judge_result
from tenantserve.registry.evals import (
    MAX_ITEMS,
    EvalResult,
    EvalSet,
    ItemOutcome,
    Rule,
    chosen_letter,
)
from tenantserve.registry.rollout import (
    Action,
    GateResult,
    Rollout,
    RolloutPlan,
)
from tenantserve.registry.rollout_policy import VersionStats, eval_block, evaluate

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def _rule(**raw: Any) -> Rule:
    return Rule.from_json(raw, "test")


def _set(*rules: dict[str, Any], **kw: Any) -> EvalSet:
    items = [{"id": f"i{n}", "prompt": "q", "rule": r} for n, r in enumerate(rules)]
    return EvalSet.from_json({"name": "golden", "items": items, **kw})


def _result(s: EvalSet, passed: int, total: int, ref: str = "m@1.1.0") -> EvalResult:
    outcomes = tuple(ItemOutcome(f"i{n}", n < passed, "") for n in range(total))
    return EvalResult("evr_x", ref, s.name, s.digest, outcomes, NOW)


def test_exact_ignores_case_surrounding_space_and_a_final_full_stop() -> None:
    rule = _rule(type="exact", value="yes")
    assert rule.passes(" Yes.") and rule.passes("YES!")
    assert not rule.passes("yes, of course")


def test_contains_matches_any_alternative_case_insensitively() -> None:
    rule = _rule(type="contains", any=["seven", "7"])
    assert rule.passes("A week has 7 days.") and rule.passes("SEVEN")
    assert not rule.passes("six")


def test_regex_searches_anywhere_in_the_answer() -> None:
    rule = _rule(type="regex", pattern=r"\b4\b")
    assert rule.passes("The answer is 4.")
    assert not rule.passes("42")


def test_choice_reads_the_letter_the_answer_opens_with() -> None:
    rule = _rule(type="choice", answer="B")
    for answer in ("B", "B. Paris", "(B)", "Answer: B", "The answer is B."):
        assert rule.passes(answer), answer
    assert not rule.passes("A. Berlin")
    assert chosen_letter("A week has seven days") is None
    assert chosen_letter("E.", "ABCD") is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "fuzzy"}, "rule type must be one of"),
        ({"type": "regex", "pattern": "("}, "invalid regex"),
        ({"type": "contains", "any": []}, "`any` must list"),
        ({"type": "choice", "answer": "E"}, "`answer` must be one of"),
        ({"type": "exact", "value": "x", "extra": 1}, "unknown rule field"),
    ],
)
def test_a_bad_rule_is_refused_with_a_message_naming_it(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Rule.from_json(raw, "item 'a'")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "bad name", "items": []}, "eval set name"),
        ({"name": "s", "items": []}, "`items` must list 1 to"),
        ({"name": "s", "items": [{"prompt": "q"}] * (MAX_ITEMS + 1)}, "`items` must list"),
        (
            {"name": "s", "items": [{"id": "a", "rule": {"type": "exact", "value": "x"}}]},
            "exactly one of",
        ),
        (
            {
                "name": "s",
                "items": [
                    {"prompt": "q", "max_tokens": 0, "rule": {"type": "exact", "value": "x"}}
                ],
            },
            "max_tokens",
        ),
        (
            {
                "name": "s",
                "items": [{"id": "a", "prompt": "q", "rule": {"type": "exact", "value": "x"}}] * 2,
            },
            "duplicate item ids",
        ),
        (
            {"name": "s", "items": [{"messages": [{"role": "bot", "content": "x"}], "rule": {}}]},
            "each message",
        ),
        ({"name": "s", "min_score": 2, "items": [{"prompt": "q"}]}, "min_score"),
    ],
)
def test_an_uploaded_set_is_validated(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        EvalSet.from_json(raw)


def test_the_digest_changes_with_the_content_and_survives_a_json_round_trip() -> None:
    s = _set({"type": "contains", "any": ["Paris"]})
    again = EvalSet.from_json(json.loads(json.dumps(s.to_json())))
    assert again.digest == s.digest
    assert _set({"type": "contains", "any": ["Rome"]}).digest != s.digest


def test_the_shipped_golden_set_is_valid_and_has_a_floor() -> None:
    golden = default_golden_set()
    assert 8 <= len(golden.items) <= 12
    assert golden.min_score is not None


def test_a_score_more_than_the_threshold_below_stables_is_a_regression() -> None:
    s = _set(*[{"type": "exact", "value": "x"}] * 20)
    cfg = EvalGateConfig(regression_threshold=0.05)
    stable = _result(s, 18, 20, ref="m@1.0.0")
    assert judge_result(s, _result(s, 17, 20), stable, cfg).verdict is Verdict.PASSED
    verdict = judge_result(s, _result(s, 16, 20), stable, cfg)
    assert verdict.verdict is Verdict.REGRESSED
    assert "regressed from m@1.0.0's 0.90" in verdict.reason


def test_a_score_below_the_floor_regresses_without_a_baseline() -> None:
    s = _set(*[{"type": "exact", "value": "x"}] * 4, min_score=0.75)
    cfg = EvalGateConfig()
    assert judge_result(s, _result(s, 2, 4), None, cfg).verdict is Verdict.REGRESSED
    assert judge_result(s, _result(s, 3, 4), None, cfg).verdict is Verdict.PASSED


def test_a_baseline_of_another_digest_is_not_compared() -> None:
    s = _set({"type": "exact", "value": "x"}, {"type": "exact", "value": "y"})
    other = _set({"type": "exact", "value": "z"}, {"type": "exact", "value": "y"})
    stale_baseline = _result(other, 2, 2, ref="m@1.0.0")
    assert judge_result(s, _result(s, 0, 2), stale_baseline, EvalGateConfig()).verdict is (
        Verdict.PASSED
    )


def test_a_missing_result_blocks_only_when_configured() -> None:
    s = _set({"type": "exact", "value": "x"})
    assert not judge([s], {}, {}, EvalGateConfig(block_on_missing=True)).passed
    assert judge([s], {}, {}, EvalGateConfig(block_on_missing=False)).passed
    assert judge([], {}, {}, EvalGateConfig()).passed


def _rollout(steps: tuple[float, ...] = (10.0, 100.0)) -> Rollout:
    plan = RolloutPlan(
        model="m",
        stable_ref="m@1.0.0",
        candidate_ref="m@1.1.0",
        shadow_percent=0.0,
        canary_steps=steps,
        step_seconds=60,
        min_requests=5,
    )
    return Rollout.start(plan, NOW)


def _healthy() -> VersionStats:
    s = VersionStats()
    for _ in range(10):
        s.record(0.1, error=False)
    return s


def test_a_failing_eval_holds_the_rollout_before_100_percent_with_the_reason() -> None:
    rollout = _rollout()
    later = NOW + timedelta(seconds=61)
    failing = GateResult(False, "eval regression: golden: 2/4 passed")
    decision = evaluate(rollout, _healthy(), _healthy(), later, eval_gate=failing)
    assert decision.action is Action.HOLD
    assert "may not take all traffic: eval regression: golden" in decision.reason
    passing = GateResult(True, "golden: 4/4 passed")
    assert evaluate(rollout, _healthy(), _healthy(), later, eval_gate=passing).action is (
        Action.ADVANCE
    )


def test_a_failing_eval_does_not_hold_steps_below_100_percent() -> None:
    rollout = _rollout((1.0, 10.0, 100.0))
    failing = GateResult(False, "eval missing")
    later = NOW + timedelta(seconds=61)
    assert evaluate(rollout, _healthy(), _healthy(), later, eval_gate=failing).action is (
        Action.ADVANCE
    )
    assert eval_block(rollout, failing) is None


def test_a_failing_eval_keeps_the_last_step_from_finishing() -> None:
    rollout = _rollout((100.0,))
    later = NOW + timedelta(seconds=61)
    decision = evaluate(rollout, _healthy(), _healthy(), later, eval_gate=GateResult(False, "x"))
    assert decision.action is Action.HOLD
    assert evaluate(rollout, _healthy(), _healthy(), later).action is Action.FINISH
