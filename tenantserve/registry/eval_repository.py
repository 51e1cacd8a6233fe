"""`EvalSetRepository` and `EvalResultRepository`: eval sets and their results in and out
of the database, as domain objects (`evals.py`).

Works inside the caller's transaction (the unit of work's session); it never commits.
Every read of a tenant's set names the tenant: a set attached to another tenant's adapter
is never returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import RowMapping, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.registry.eval_tables import eval_results, eval_sets
from tenantserve.registry.evals import (
    EvalResult,
    EvalSet,
    StoredEvalSet,
    outcomes_from_json,
    outcomes_json,
)


class EvalSetRepository:
    """Eval sets by target, read and written through one session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def put(self, stored: StoredEvalSet) -> None:
        """Attach the set to its target, replacing the target's set of the same name."""
        await self._session.execute(
            delete(eval_sets).where(
                eval_sets.c.target == stored.target, eval_sets.c.name == stored.eval_set.name
            )
        )
        await self._session.execute(
            insert(eval_sets).values(
                id=stored.id,
                target=stored.target,
                tenant_id=stored.tenant_id,
                name=stored.eval_set.name,
                digest=stored.digest,
                body=stored.eval_set.to_json(),
                created_at=stored.created_at,
            )
        )

    async def for_targets(
        self, targets: Sequence[str], tenant_id: str | None = None
    ) -> Sequence[StoredEvalSet]:
        """The sets attached to any of `targets` (of `tenant_id` only when given, else the
        operator's: no tenant's), oldest first."""
        owner = (
            eval_sets.c.tenant_id == tenant_id
            if tenant_id is not None
            else eval_sets.c.tenant_id.is_(None)
        )
        result = await self._session.execute(
            select(eval_sets)
            .where(eval_sets.c.target.in_(list(targets)), owner)
            .order_by(eval_sets.c.created_at, eval_sets.c.name)
        )
        return [_stored(row) for row in result.mappings()]

    async def operator_sets(self, model: str | None = None) -> Sequence[StoredEvalSet]:
        """Every operator set (of `model`: attached to it or one of its versions)."""
        query = select(eval_sets).where(eval_sets.c.tenant_id.is_(None))
        if model is not None:
            query = query.where(
                (eval_sets.c.target == model) | eval_sets.c.target.startswith(f"{model}@")
            )
        result = await self._session.execute(query.order_by(eval_sets.c.target, eval_sets.c.name))
        return [_stored(row) for row in result.mappings()]

    async def remove(self, target: str, name: str, tenant_id: str | None = None) -> bool:
        """Detach the target's set `name` (the tenant's own only); whether one was."""
        owner = (
            eval_sets.c.tenant_id == tenant_id
            if tenant_id is not None
            else eval_sets.c.tenant_id.is_(None)
        )
        result = await self._session.execute(
            delete(eval_sets).where(eval_sets.c.target == target, eval_sets.c.name == name, owner)
        )
        return bool(getattr(result, "rowcount", 0))


class EvalResultRepository:
    """Eval results per version ref, read and written through one session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, result: EvalResult) -> None:
        """Record one run."""
        await self._session.execute(
            insert(eval_results).values(
                id=result.id,
                ref=result.ref,
                model=result.ref.partition("@")[0],
                tenant_id=result.tenant_id,
                set_name=result.set_name,
                set_digest=result.set_digest,
                passed=result.passed,
                total=result.total,
                score=result.score,
                outcomes=outcomes_json(result.outcomes),
                created_at=result.at,
            )
        )

    async def latest(self, ref: str, set_name: str, digest: str) -> EvalResult | None:
        """The newest result of the set (that digest) on `ref`, or None."""
        result = await self._session.execute(
            select(eval_results)
            .where(
                eval_results.c.ref == ref,
                eval_results.c.set_name == set_name,
                eval_results.c.set_digest == digest,
            )
            .order_by(eval_results.c.created_at.desc())
            .limit(1)
        )
        row = result.mappings().first()
        return _result(row) if row is not None else None

    async def list(
        self, model: str, ref: str | None = None, tenant_id: str | None = None, limit: int = 100
    ) -> Sequence[EvalResult]:
        """The newest `limit` results of `model` (of `ref` when given; `tenant_id`'s, else
        the operator's), newest first."""
        owner = (
            eval_results.c.tenant_id == tenant_id
            if tenant_id is not None
            else eval_results.c.tenant_id.is_(None)
        )
        query = select(eval_results).where(eval_results.c.model == model, owner)
        if ref is not None:
            query = query.where(eval_results.c.ref == ref)
        result = await self._session.execute(
            query.order_by(eval_results.c.created_at.desc()).limit(limit)
        )
        return [_result(row) for row in result.mappings()]


def _stored(row: RowMapping) -> StoredEvalSet:
    return StoredEvalSet(
        id=row["id"],
        target=row["target"],
        eval_set=EvalSet.from_json(row["body"]),
        created_at=row["created_at"],
        tenant_id=row["tenant_id"],
    )


def _result(row: RowMapping) -> EvalResult:
    return EvalResult(
        id=row["id"],
        ref=row["ref"],
        set_name=row["set_name"],
        set_digest=row["set_digest"],
        outcomes=outcomes_from_json(row["outcomes"]),
        at=row["created_at"],
        tenant_id=row["tenant_id"],
    )
