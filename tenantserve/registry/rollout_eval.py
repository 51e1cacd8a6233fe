"""The eval gate as rollouts read it: `RolloutEvalGate(rollout)` is the candidate's stored
eval verdict against the stable version (`EvalService.verdict`), which `RolloutService`
passes to the pure `rollout_policy.evaluate` and checks before a promotion by hand.

A candidate of a model with eval sets but no result yet is evaluated in the background
once per process (through the pool serving it), so the gate opens by itself when the
candidate passes; until then the verdict is "missing" (blocking unless the gate's config
says otherwise). Adapter rollouts have no operator gate: a tenant's set ran at upload.
"""

from __future__ import annotations

import asyncio
import logging

from tenantserve.errors import InvalidRequestError
from tenantserve.registry.adapters import is_adapter_key
from tenantserve.registry.eval_gate import MISSING_PREFIX
from tenantserve.registry.eval_service import EvalService
from tenantserve.registry.rollout import GateResult, Rollout

logger = logging.getLogger(__name__)


class RolloutEvalGate:
    """The candidate's eval verdict for a rollout; None for adapter rollouts."""

    def __init__(self, evals: EvalService, auto_run: bool = True) -> None:
        self._evals = evals
        self._auto_run = auto_run
        self._started: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, rollout: Rollout) -> GateResult | None:
        if is_adapter_key(rollout.model):
            return None
        plan = rollout.plan
        verdict = await self._evals.verdict(plan.candidate_ref, plan.stable_ref)
        if not verdict.passed and verdict.detail.startswith(MISSING_PREFIX):
            self._run_in_background(plan.candidate_ref)
        return verdict

    async def golden_set(self, candidate_ref: str) -> GateResult:
        """Run the candidate's sets now and return the verdict (`require_golden_set`)."""
        try:
            return (await self._evals.run(candidate_ref)).verdict
        except InvalidRequestError as e:
            return GateResult(False, str(e))

    def _run_in_background(self, ref: str) -> None:
        if not self._auto_run or ref in self._started:
            return
        self._started.add(ref)
        task = asyncio.create_task(self._run(ref))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, ref: str) -> None:
        try:
            run = await self._evals.run(ref)
            logger.info("eval of rollout candidate %s: %s", ref, run.verdict.detail)
        except Exception:
            logger.exception("eval of rollout candidate %s failed", ref)
