"""Rollout use cases: start a rollout of a registered version, read its status, promote or
roll it back by hand, count what each version does (`observe`), and let `tick` advance,
finish or roll back running rollouts by the plan's rules (`rollout_policy.evaluate`).

The rollouts and their history live in the database (one running rollout per model);
the per-step stats live in this process's memory (`rollout_live.py`). `route` /
`shadow_target` answer the gateway from memory, without a database read. `tick` (or
`run_forever`) re-reads the running rollouts first, so changes made elsewhere (the CLI on
the database) take effect.

When a rollout finishes, one transaction marks it done, makes a canary candidate active,
and deprecates the old stable version (end date 90 days out, the candidate named as its
replacement), so plain `name` requests then resolve to the candidate.

A tenant's adapter versions roll out the same way (`start_adapter`): the key is
`adapter:<tenant>/<name>`, the refs `adapter:<tenant>/<name>@<version>`; finishing one
supersedes the old version, rolling one back marks the candidate failed and superseded
(its report the reason), so the stable version keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.adapter_smoke import SmokeReport
from tenantserve.registry.adapters import (
    adapter_ref,
    adapter_rollout_key,
    is_adapter_key,
    parse_adapter_key,
)
from tenantserve.registry.model import ModelVersion
from tenantserve.registry.naming import validate_name
from tenantserve.registry.rollout import (
    DEFAULT_CANARY_STEPS,
    DEFAULT_ERROR_RATE_MARGIN,
    DEFAULT_MIN_REQUESTS,
    DEFAULT_P95_LATENCY_MARGIN,
    DEFAULT_SHADOW_PERCENT,
    DEFAULT_STEP_SECONDS,
    Action,
    Decision,
    GateResult,
    Rollout,
    RolloutPhase,
    RolloutPlan,
    apply,
)
from tenantserve.registry.rollout_live import LiveRollouts, StepStats
from tenantserve.registry.rollout_policy import eval_block, evaluate
from tenantserve.registry.rollout_repository import DuplicateRolloutError, StaleRolloutError
from tenantserve.registry.rollout_versions import (
    candidate_ref,
    finish_adapter,
    finish_versions,
    pick_candidate,
    pick_stable,
    roll_back_adapter,
    validate_key,
)
from tenantserve.registry.unit_of_work import RegistryUnitOfWork

logger = logging.getLogger(__name__)

DEFAULT_TICK_INTERVAL_S = 5.0
# Runs the golden-set eval against a candidate `name@version`.
GoldenSetEval = Callable[[str], Awaitable[GateResult]]
# The candidate's stored eval verdict (`rollout_eval.py`); None: no gate for this rollout.
EvalGateCheck = Callable[[Rollout], Awaitable[GateResult | None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


class RolloutConflictError(InvalidRequestError):
    """The model already has a running rollout, or it changed while this call ran."""


class RolloutService:
    """Rollouts over a unit of work; an optional golden-set eval and change callback."""

    def __init__(
        self,
        uow_factory: Callable[[], RegistryUnitOfWork],
        clock: Callable[[], datetime] = utc_now,
        golden_set: GoldenSetEval | None = None,
        on_change: Callable[[], None] | None = None,
        smoke_test: Callable[[ModelVersion], Awaitable[SmokeReport]] | None = None,
        eval_gate: EvalGateCheck | None = None,
    ) -> None:
        self._uow = uow_factory
        self._clock = clock
        self._golden_set = golden_set
        # Run on a model version before its rollout starts (`model_smoke.py`).
        self._smoke_test = smoke_test
        self._on_change = on_change
        # Blocks promotion to (and finishing at) 100% while the candidate's eval fails.
        self._eval_gate = eval_gate
        self._live = LiveRollouts()

    async def start(
        self,
        name: str,
        candidate: str,
        *,
        shadow_percent: float = DEFAULT_SHADOW_PERCENT,
        canary_steps: Sequence[float] = DEFAULT_CANARY_STEPS,
        step_seconds: float = DEFAULT_STEP_SECONDS,
        min_requests: int = DEFAULT_MIN_REQUESTS,
        error_rate_margin: float = DEFAULT_ERROR_RATE_MARGIN,
        p95_latency_margin: float = DEFAULT_P95_LATENCY_MARGIN,
        max_divergence_rate: float | None = None,
        require_golden_set: bool = False,
        reason: str | None = None,
    ) -> Rollout:
        """Start rolling `candidate` (`version` or `name@version`, registered, public, not
        deprecated or archived, newer than the stable one) out over the model's newest
        active public version; RolloutConflictError when the model already has one."""
        validate_name(name)
        ref = candidate_ref(name, candidate)
        if require_golden_set and self._golden_set is None:
            raise InvalidRequestError("no golden-set eval is configured on this server")
        if self._smoke_test is not None:
            async with self._uow() as uow:
                target = pick_candidate(await uow.models.list(name), ref)
            verdict = await self._smoke_test(target)
            if not verdict.ok:
                raise InvalidRequestError(f"{target.ref} failed its smoke test: {verdict.report}")
        now = self._clock()
        async with self._uow() as uow:
            running = await uow.rollouts.active(name)
            if running:
                raise _already_running(running[0])
            versions = await uow.models.list(name)
            target = pick_candidate(versions, ref)
            stable = pick_stable(versions, target)
            plan = RolloutPlan(
                model=name,
                stable_ref=stable.ref,
                candidate_ref=target.ref,
                shadow_percent=shadow_percent,
                canary_steps=tuple(canary_steps),
                step_seconds=step_seconds,
                min_requests=min_requests,
                error_rate_margin=error_rate_margin,
                p95_latency_margin=p95_latency_margin,
                max_divergence_rate=max_divergence_rate,
                require_golden_set=require_golden_set,
            )
            started = f"started: {target.ref} over {stable.ref}"
            rollout = Rollout.start(plan, now, f"{started} ({reason})" if reason else started)
            try:
                await uow.rollouts.add(rollout, now)
                await uow.commit()
            except DuplicateRolloutError:
                raise RolloutConflictError(
                    f"model {name} already has a running rollout; `tenantserve rollout "
                    f"status {name}` shows it"
                ) from None
        self._live.install(rollout)
        self._changed()
        return rollout

    async def start_adapter(
        self,
        tenant_id: str,
        name: str,
        stable_version: int,
        candidate_version: int,
        *,
        shadow_percent: float = DEFAULT_SHADOW_PERCENT,
        canary_steps: Sequence[float] = DEFAULT_CANARY_STEPS,
        step_seconds: float = DEFAULT_STEP_SECONDS,
        min_requests: int = DEFAULT_MIN_REQUESTS,
        error_rate_margin: float = DEFAULT_ERROR_RATE_MARGIN,
        p95_latency_margin: float = DEFAULT_P95_LATENCY_MARGIN,
        reason: str | None = None,
    ) -> Rollout:
        """Start rolling version `candidate_version` of the tenant's adapter `name` out over
        `stable_version` (both ready; the adapter service checked them, not the model
        registry), keyed `adapter:<tenant>/<name>`; RolloutConflictError when one runs.
        Shadow first, like a model version: mirrored requests run with the candidate's
        files, for this tenant only."""
        key = adapter_rollout_key(tenant_id, name)
        parse_adapter_key(key)
        now = self._clock()
        plan = RolloutPlan(
            model=key,
            stable_ref=adapter_ref(tenant_id, name, stable_version),
            candidate_ref=adapter_ref(tenant_id, name, candidate_version),
            shadow_percent=shadow_percent,
            canary_steps=tuple(canary_steps),
            step_seconds=step_seconds,
            min_requests=min_requests,
            error_rate_margin=error_rate_margin,
            p95_latency_margin=p95_latency_margin,
        )
        started = f"started: {plan.candidate_ref} over {plan.stable_ref}"
        rollout = Rollout.start(plan, now, f"{started} ({reason})" if reason else started)
        async with self._uow() as uow:
            running = await uow.rollouts.active(key)
            if running:
                raise _already_running(running[0])
            try:
                await uow.rollouts.add(rollout, now)
                await uow.commit()
            except DuplicateRolloutError:
                raise RolloutConflictError(f"{key} already has a running rollout") from None
        self._live.install(rollout)
        self._changed()
        return rollout

    async def status(self, name: str) -> Rollout:
        """The model's running rollout, else its most recent one; NotFoundError if none."""
        validate_key(name)
        async with self._uow() as uow:
            found = await uow.rollouts.latest(name)
        if found is None:
            raise NotFoundError(f"model {name} has no rollout")
        return found

    async def list_active(self) -> Sequence[Rollout]:
        """Every running rollout, by model."""
        async with self._uow() as uow:
            return await uow.rollouts.active()

    def stats(self, name: str) -> StepStats | None:
        """Copies of this step's stats of the model's running rollout in this process."""
        return self._live.stats(name)

    async def promote(self, name: str, reason: str | None = None) -> Rollout:
        """Move the model's running rollout to its next step now (from 100%: finish)."""
        why = f"promoted by hand: {reason}" if reason else "promoted by hand"
        if self._eval_gate is not None:
            running = await self.status(name)
            blocked = eval_block(running, await self._eval_gate(running))
            if blocked is not None:
                raise RolloutConflictError(f"cannot promote: {blocked}")
        return await self._change(name, Decision(Action.ADVANCE, why), self._clock())

    async def rollback(self, name: str, reason: str | None = None) -> Rollout:
        """Send all the model's traffic back to the stable version now."""
        why = f"rolled back by hand: {reason}" if reason else "rolled back by hand"
        return await self._change(name, Decision(Action.ROLLBACK, why), self._clock())

    def observe(self, ref: str, latency_s: float, error: bool, diverged: bool = False) -> None:
        """Count one request served (or, in shadow, mirrored) by version `ref`; versions
        without a running rollout are ignored. Never blocks on I/O."""
        self._live.observe(ref, latency_s, error, diverged)

    def route(self, name: str, request_id: str) -> str | None:
        """The `name@version` serving `request_id` for a plain `name` request while a
        rollout of `name` runs (sticky per request id); None when none runs."""
        return self._live.route(name, request_id)

    def shadow_target(self, name: str, request_id: str) -> str | None:
        """The candidate to mirror `request_id` to (its answer discarded), or None."""
        return self._live.shadow_target(name, request_id)

    async def refresh(self) -> None:
        """Re-read the running rollouts (changes made by other processes take effect)."""
        self._live.sync(await self.list_active())

    async def tick(self, now: datetime | None = None) -> list[Rollout]:
        """Evaluate every running rollout and apply what the rules decide (advance,
        finish, roll back; each recorded with its reason); the rollouts that changed."""
        now = now or self._clock()
        await self.refresh()
        changed: list[Rollout] = []
        for evaluated, (stable, candidate) in self._live.judged():
            evals = await self._eval_gate(evaluated) if self._eval_gate else None
            decision = evaluate(evaluated, stable, candidate, now, eval_gate=evals)
            if decision.action is Action.GATE:
                gate = await self._run_golden_set(evaluated.plan.candidate_ref)
                decision = evaluate(evaluated, stable, candidate, now, gate, evals)
            if decision.action in (Action.HOLD, Action.GATE):
                continue
            try:
                changed.append(await self._change(evaluated.model, decision, now, evaluated))
            except (RolloutConflictError, NotFoundError):
                logger.info("rollout of %s changed meanwhile; re-read next tick", evaluated.model)
        return changed

    async def run_forever(self, interval_s: float = DEFAULT_TICK_INTERVAL_S) -> None:
        """`tick` every `interval_s` until cancelled; a failing tick is logged, not fatal."""
        while True:
            try:
                for rollout in await self.tick():
                    last = rollout.history[-1]
                    logger.info("rollout of %s: %s (%s)", rollout.model, last.phase, last.reason)
            except Exception:
                logger.exception("rollout tick failed")
            await asyncio.sleep(interval_s)

    async def _change(
        self,
        name: str,
        decision: Decision,
        now: datetime,
        expected: Rollout | None = None,
    ) -> Rollout:
        """Apply `decision` to the model's running rollout in one transaction (with
        the version changes a finish makes); refused when it is not `expected` any more."""
        validate_key(name)
        async with self._uow() as uow:
            running = await uow.rollouts.active(name)
            if not running:
                raise NotFoundError(f"model {name} has no running rollout")
            rollout = running[0]
            if expected is not None and (rollout.id, rollout.revision) != (
                expected.id,
                expected.revision,
            ):
                raise RolloutConflictError(f"the rollout of {name} changed meanwhile")
            if decision.action is Action.FINISH or (
                decision.action is Action.ADVANCE and rollout.at_last_step
            ):
                finish = finish_adapter if is_adapter_key(name) else finish_versions
                decision = await finish(uow, rollout, decision, now)
            apply(rollout, decision, now)
            if is_adapter_key(name) and rollout.phase is RolloutPhase.ROLLED_BACK:
                await roll_back_adapter(uow, rollout, decision, now)
            try:
                await uow.rollouts.update(rollout, now)
            except StaleRolloutError:
                raise RolloutConflictError(
                    f"the rollout of {name} changed meanwhile; try again"
                ) from None
            await uow.commit()
        self._live.install(rollout)
        self._changed()
        return rollout

    async def _run_golden_set(self, candidate_ref: str) -> GateResult:
        if self._golden_set is None:
            return GateResult(False, "no golden-set eval is configured on this server")
        try:
            return await self._golden_set(candidate_ref)
        except Exception as e:
            logger.exception("golden-set eval of %s failed", candidate_ref)
            return GateResult(False, f"the eval raised {type(e).__name__}: {e}")

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def _already_running(rollout: Rollout) -> RolloutConflictError:
    return RolloutConflictError(
        f"model {rollout.model} already has a running rollout of "
        f"{rollout.plan.candidate_ref} ({rollout.step_label}); promote or roll it back first"
    )
