"""Eval use cases: attach eval sets (to a model, one of its versions, or a tenant's adapter),
run them against a version through the pool serving it, keep the results, and judge them
(`eval_gate.py`): a regression raises the operator event `eval_regression`.

    operator sets   target `name` (every version) or `name@version`; `run(ref)` runs
                    both kinds on the version; the verdict compares each set's score with
                    the stable version's latest score of the same set (same digest)
    tenant sets     one per adapter name, target `adapter:<tenant>/<name>`, private: every
                    read names the tenant, so another tenant's name is "not found". It runs
                    after each upload's smoke test (`check_adapter`): below its `min_score`
                    (default 1.0, every item) the version fails with the eval as its report
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantserve.engine.request import LoraRef
from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.adapter_smoke import SmokeReport
from tenantserve.registry.adapters import Adapter, adapter_rollout_key, validate_adapter_name
from tenantserve.registry.eval_gate import EvalGateConfig, Verdict, judge, judge_result
from tenantserve.registry.eval_runner import Completer, EvalRunner
from tenantserve.registry.evals import (
    EvalResult,
    EvalSet,
    StoredEvalSet,
    new_eval_set_id,
)
from tenantserve.registry.model import ModelStatus, ModelVersion
from tenantserve.registry.naming import ModelRef, version_key
from tenantserve.registry.rollout import GateResult
from tenantserve.registry.service import RegistryService, utc_now
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.tenancy.model import TenantContext

if TYPE_CHECKING:
    from tenantserve.registry.adapter_service import AdapterService

logger = logging.getLogger(__name__)

REGRESSION_EVENT = "eval_regression"
DEFAULT_ADAPTER_MIN_SCORE = 1.0

# targets(ref, lora): what answers prompts as version `ref` (with the adapter, when given),
# or None when nothing here serves it.
Targets = Callable[[str, LoraRef | None], Completer | None]
OnEvent = Callable[[str, str | None, Mapping[str, Any]], object]


def _no_event(kind: str, tenant_id: str | None, details: Mapping[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class EvalRun:
    """What `run` did: the version, each set's result, and the gate's verdict on it."""

    ref: str
    results: tuple[EvalResult, ...]
    verdict: GateResult


class EvalService:
    """Eval sets, runs and verdicts over the registry's unit of work."""

    def __init__(
        self,
        uow_factory: Callable[[], RegistryUnitOfWork],
        registry: RegistryService,
        targets: Targets,
        *,
        runner: EvalRunner | None = None,
        gate: EvalGateConfig | None = None,
        on_event: OnEvent = _no_event,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow = uow_factory
        self._registry = registry
        self._targets = targets
        self._clock = clock
        self.runner = runner or EvalRunner(clock)
        self.gate = gate or EvalGateConfig()
        self._on_event = on_event
        # Set by the composition root: attaching a tenant set evaluates the adapter's
        # current version right away.
        self.adapters: AdapterService | None = None

    # -- operator sets ------------------------------------------------------------------

    async def put_model_set(self, model: str, raw: object) -> StoredEvalSet:
        """Attach a set to `model` (every version) or `model@version` (that one), replacing
        the target's set of the same name; NotFoundError for an unknown model or version."""
        ref = ModelRef.parse(model)
        eval_set = EvalSet.from_json(raw)
        if ref.version is not None:
            await self._registry.get(str(ref))
        elif not await self._registry.list(ref.name):
            raise NotFoundError(f"model {ref.name} has no registered version")
        stored = StoredEvalSet(new_eval_set_id(), str(ref), eval_set, self._clock())
        async with self._uow() as uow:
            await uow.eval_sets.put(stored)
            await uow.commit()
        return stored

    async def ensure_model_set(self, model: str, eval_set: EvalSet) -> StoredEvalSet | None:
        """Attach `eval_set` to `model` unless it has a set of that name (kept as the operator
        left it); the new set, or None when one was there."""
        async with self._uow() as uow:
            existing = await uow.eval_sets.for_targets([model])
            if any(s.eval_set.name == eval_set.name for s in existing):
                return None
            stored = StoredEvalSet(new_eval_set_id(), model, eval_set, self._clock())
            await uow.eval_sets.put(stored)
            await uow.commit()
        return stored

    async def model_sets(self, model: str | None = None) -> Sequence[StoredEvalSet]:
        """The operator's sets (of `model` and its versions)."""
        async with self._uow() as uow:
            return await uow.eval_sets.operator_sets(model)

    async def remove_model_set(self, target: str, name: str) -> None:
        """Detach the set `name` from `target`; NotFoundError when it is not attached."""
        async with self._uow() as uow:
            removed = await uow.eval_sets.remove(target, name)
            await uow.commit()
        if not removed:
            raise NotFoundError(f"{target} has no eval set {name!r}")

    async def required_sets(self, version: ModelVersion) -> Sequence[EvalSet]:
        """`sets_for(version.ref)`; InvalidRequestError saying how to attach one if none."""
        sets = await self.sets_for(version.ref)
        if not sets:
            raise InvalidRequestError(
                f"no eval set applies to {version.ref}; attach one with `tenantserve eval set "
                f"upload FILE --model {version.name}`"
            )
        return sets

    async def sets_for(self, ref: str) -> Sequence[EvalSet]:
        """The sets that apply to version `ref`: its model's and its own."""
        name = ref.partition("@")[0]
        async with self._uow() as uow:
            stored = await uow.eval_sets.for_targets([name, ref])
        return [s.eval_set for s in stored]

    # -- runs and verdicts -------------------------------------------------------------

    async def run(self, model: str) -> EvalRun:
        """Run every set that applies to `model` (`name@version`; a plain name: the version
        its requests get) through the pool serving it, store the results, and judge them;
        a regression raises the `eval_regression` operator event."""
        version = await self.version_of(model)
        sets = await self.required_sets(version)
        completer = self._targets(version.ref, None)
        if completer is None:
            raise InvalidRequestError(f"no pool of this server serves {version.ref}")
        return await self.run_with(version.ref, sets, completer)

    async def run_with(self, ref: str, sets: Sequence[EvalSet], completer: Completer) -> EvalRun:
        """Run `sets` on `ref` with `completer` (the CLI's own engine, or a pool's), store
        and judge the results (see `run`)."""
        baseline_ref = await self.baseline_ref(ref)
        baselines = await self._latest(baseline_ref, sets) if baseline_ref else {}
        results = [await self.runner.run(s, completer, ref) for s in sets]
        async with self._uow() as uow:
            for result in results:
                await uow.eval_results.add(result)
            await uow.commit()
        by_name = {r.set_name: r for r in results}
        for s in sets:
            verdict = judge_result(s, by_name.get(s.name), baselines.get(s.name), self.gate)
            if verdict.verdict is Verdict.REGRESSED:
                base = baselines.get(s.name)
                self._on_event(
                    REGRESSION_EVENT,
                    None,
                    {
                        "ref": ref,
                        "set": s.name,
                        "score": by_name[s.name].score,
                        "baseline_ref": base.ref if base else None,
                        "baseline_score": base.score if base else None,
                        "reason": verdict.reason,
                    },
                )
                logger.warning("eval regression of %s: %s", ref, verdict.reason)
        return EvalRun(ref, tuple(results), judge(sets, by_name, baselines, self.gate))

    async def verdict(self, ref: str, baseline_ref: str | None = None) -> GateResult:
        """The gate over `ref`'s latest stored results against `baseline_ref`'s (default:
        `baseline_ref(ref)`); passes when no set applies."""
        sets = await self.sets_for(ref)
        if not sets:
            return GateResult(True, "no eval set")
        baseline_ref = baseline_ref or await self.baseline_ref(ref)
        results = await self._latest(ref, sets)
        baselines = await self._latest(baseline_ref, sets) if baseline_ref else {}
        return judge(sets, results, baselines, self.gate)

    async def results(self, model: str, limit: int = 100) -> Sequence[EvalResult]:
        """The newest operator results of `model` (`name` or `name@version`), newest first."""
        ref = ModelRef.parse(model)
        async with self._uow() as uow:
            return await uow.eval_results.list(
                ref.name, str(ref) if ref.version else None, limit=limit
            )

    async def baseline_ref(self, ref: str) -> str | None:
        """What `ref` is compared with: the running rollout's stable version when `ref` is
        its candidate, else the model's newest active public version (itself: its own
        previous result)."""
        name = ref.partition("@")[0]
        async with self._uow() as uow:
            running = await uow.rollouts.active(name)
            versions = await uow.models.list(name)
        if running and running[0].plan.candidate_ref == ref:
            return running[0].plan.stable_ref
        active = [v for v in versions if v.status is ModelStatus.ACTIVE and v.is_public]
        if not active:
            return None
        return max(active, key=lambda v: version_key(v.version)).ref

    async def _latest(self, ref: str, sets: Sequence[EvalSet]) -> dict[str, EvalResult]:
        found: dict[str, EvalResult] = {}
        async with self._uow() as uow:
            for s in sets:
                result = await uow.eval_results.latest(ref, s.name, s.digest)
                if result is not None:
                    found[s.name] = result
        return found

    async def version_of(self, model: str) -> ModelVersion:
        """The version `name@version` names, or the one a plain `name` request gets."""
        ref = ModelRef.parse(model)
        if ref.version is not None:
            return await self._registry.get(str(ref))
        return (await self._registry.resolve(ref.name, None)).version

    # -- tenant sets on adapters -------------------------------------------------------

    async def put_adapter_set(
        self, ctx: TenantContext, adapter: str, raw: object
    ) -> tuple[StoredEvalSet, EvalResult | None]:
        """Attach the tenant's set to its adapter name (replacing any), and evaluate the
        current version with it when there is one (informational: a live version is not
        failed by it; the next uploads are)."""
        key = adapter_rollout_key(ctx.tenant_id, validate_adapter_name(adapter))
        stored = StoredEvalSet(
            new_eval_set_id(), key, EvalSet.from_json(raw), self._clock(), ctx.tenant_id
        )
        async with self._uow() as uow:
            for old in await uow.eval_sets.for_targets([key], ctx.tenant_id):
                await uow.eval_sets.remove(key, old.eval_set.name, ctx.tenant_id)
            await uow.eval_sets.put(stored)
            await uow.commit()
        result = None
        current = await self.adapters.resolve(ctx, adapter) if self.adapters else None
        if current is not None and self.adapters is not None:
            files_dir = await self.adapters.local_dir(current)
            result = await self._run_adapter(current, stored.eval_set, files_dir)
        return stored, result

    async def adapter_set(
        self, ctx: TenantContext, adapter: str
    ) -> tuple[StoredEvalSet, Sequence[EvalResult]]:
        """The tenant's set of its adapter and its newest results; NotFoundError when it
        has none (another tenant's adapter included)."""
        key = adapter_rollout_key(ctx.tenant_id, validate_adapter_name(adapter))
        async with self._uow() as uow:
            found = await uow.eval_sets.for_targets([key], ctx.tenant_id)
            results = await uow.eval_results.list(key, tenant_id=ctx.tenant_id, limit=20)
        if not found:
            raise NotFoundError(f"adapter {adapter!r} has no eval set")
        return found[0], results

    async def remove_adapter_set(self, ctx: TenantContext, adapter: str) -> None:
        """Detach the tenant's set from its adapter; NotFoundError when it has none."""
        stored, _ = await self.adapter_set(ctx, adapter)
        async with self._uow() as uow:
            await uow.eval_sets.remove(stored.target, stored.eval_set.name, ctx.tenant_id)
            await uow.commit()

    async def check_adapter(self, adapter: Adapter, files_dir: Path) -> SmokeReport:
        """After the smoke test: the tenant's set of the adapter's name on this version;
        ok (with the score as the report) or not ok below its min_score."""
        async with self._uow() as uow:
            found = await uow.eval_sets.for_targets([adapter.rollout_key], adapter.tenant_id)
        if not found:
            return SmokeReport(True)
        eval_set = found[0].eval_set
        result = await self._run_adapter(adapter, eval_set, files_dir)
        floor = eval_set.min_score if eval_set.min_score is not None else DEFAULT_ADAPTER_MIN_SCORE
        if result is None:
            return SmokeReport(False, f"eval set {eval_set.name}: no engine here serves the base")
        if result.score < floor:
            failed = [o.item_id for o in result.outcomes if not o.passed]
            return SmokeReport(
                False,
                f"tenant eval {result.summary()} is below min_score {floor:.2f}; failed "
                f"items: {', '.join(failed[:10])}",
            )
        return SmokeReport(True, f"tenant eval {result.summary()}")

    async def _run_adapter(
        self, adapter: Adapter, eval_set: EvalSet, files_dir: Path
    ) -> EvalResult | None:
        lora = LoraRef(adapter_id=f"eval-{adapter.id}-{new_eval_set_id()}", path=str(files_dir))
        completer = self._targets(adapter.base_model, lora)
        if completer is None:
            return None
        result = await self.runner.run(eval_set, completer, adapter.ref, adapter.tenant_id)
        async with self._uow() as uow:
            await uow.eval_results.add(result)
            await uow.commit()
        return result
