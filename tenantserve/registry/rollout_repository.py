"""`RolloutRepository`: rollouts (plan, phase, step, history of steps with reasons) in and
out of the database, as domain objects (`rollout.py`).

Works inside the caller's transaction (the unit of work's session); it never commits.
The database keeps one running rollout per model, and a revision column refuses a write
from a stale copy (another process applied a step first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.registry.rollout import Rollout, RolloutEvent, RolloutPhase, RolloutPlan
from tenantserve.registry.tables import rollouts


class DuplicateRolloutError(Exception):
    """The model already has a running rollout (one per model, database-enforced)."""


class StaleRolloutError(Exception):
    """The rollout changed since it was read (another process applied a step first)."""


class RolloutRepository:
    """Rollouts, read and written through one session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, rollout: Rollout, now: datetime) -> None:
        """Insert a new rollout; DuplicateRolloutError when its model already has a running
        one (the transaction must then be rolled back)."""
        try:
            await self._session.execute(
                insert(rollouts).values(
                    id=rollout.id,
                    model=rollout.model,
                    stable_ref=rollout.plan.stable_ref,
                    candidate_ref=rollout.plan.candidate_ref,
                    plan=_plan_json(rollout.plan),
                    created_at=rollout.created_at,
                    revision=rollout.revision,
                    **_rollout_state(rollout, now),
                )
            )
        except IntegrityError as e:
            raise DuplicateRolloutError(rollout.model) from e

    async def active(self, model: str | None = None) -> Sequence[Rollout]:
        """The running rollouts (of `model` when given: at most one), by model."""
        query = select(rollouts).where(rollouts.c.active_model.is_not(None))
        if model is not None:
            query = query.where(rollouts.c.active_model == model)
        result = await self._session.execute(query.order_by(rollouts.c.model))
        return [_rollout(row) for row in result.mappings()]

    async def latest(self, model: str) -> Rollout | None:
        """The model's running rollout, else its most recent one; None when it never had one."""
        result = await self._session.execute(
            select(rollouts)
            .where(rollouts.c.model == model)
            .order_by(rollouts.c.active_model.is_(None), rollouts.c.created_at.desc())
            .limit(1)
        )
        row = result.mappings().first()
        return _rollout(row) if row is not None else None

    async def update(self, rollout: Rollout, now: datetime) -> None:
        """Write the rollout's state and history if nobody wrote it since it was read
        (StaleRolloutError otherwise); bumps its revision."""
        result = await self._session.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout.id, rollouts.c.revision == rollout.revision)
            .values(revision=rollout.revision + 1, **_rollout_state(rollout, now))
        )
        if not getattr(result, "rowcount", 0):
            raise StaleRolloutError(rollout.id)
        rollout.revision += 1


def _plan_json(plan: RolloutPlan) -> dict[str, Any]:
    out = asdict(plan)
    for column in ("model", "stable_ref", "candidate_ref"):
        del out[column]
    out["canary_steps"] = list(plan.canary_steps)
    return out


def _rollout_state(rollout: Rollout, now: datetime) -> dict[str, Any]:
    return {
        "active_model": rollout.model if rollout.is_active else None,
        "phase": rollout.phase.value,
        "step_index": rollout.step_index,
        "percent": rollout.percent,
        "step_started_at": rollout.step_started_at,
        "updated_at": now,
        "finished_at": rollout.finished_at,
        "history": [
            {
                "at": e.at.isoformat(),
                "phase": e.phase.value,
                "percent": e.percent,
                "reason": e.reason,
            }
            for e in rollout.history
        ],
    }


def _rollout(row: RowMapping) -> Rollout:
    options = dict(row["plan"])
    options["canary_steps"] = tuple(options["canary_steps"])
    plan = RolloutPlan(
        model=row["model"],
        stable_ref=row["stable_ref"],
        candidate_ref=row["candidate_ref"],
        **options,
    )
    return Rollout(
        id=row["id"],
        plan=plan,
        phase=RolloutPhase(row["phase"]),
        step_index=row["step_index"],
        step_started_at=row["step_started_at"],
        created_at=row["created_at"],
        history=[
            RolloutEvent(
                at=datetime.fromisoformat(e["at"]),
                phase=RolloutPhase(e["phase"]),
                percent=e["percent"],
                reason=e["reason"],
            )
            for e in row["history"]
        ],
        finished_at=row["finished_at"],
        revision=row["revision"],
    )
