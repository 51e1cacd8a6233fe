"""`RegistryUnitOfWork`: one transaction around model-registry changes (model versions,
tenant adapters, rollouts, eval sets and results; `storage/unit_of_work.py`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.registry.eval_repository import EvalResultRepository, EvalSetRepository
from tenantserve.registry.repository import AdapterRepository, ModelRepository
from tenantserve.registry.rollout_repository import RolloutRepository
from tenantserve.storage.unit_of_work import SqlUnitOfWork


class RegistryUnitOfWork(SqlUnitOfWork):
    """Model versions, tenant adapters, rollouts and evals, in one session."""

    models: ModelRepository
    adapters: AdapterRepository
    rollouts: RolloutRepository
    eval_sets: EvalSetRepository
    eval_results: EvalResultRepository

    def _open(self, session: AsyncSession) -> None:
        self.models = ModelRepository(session)
        self.adapters = AdapterRepository(session)
        self.rollouts = RolloutRepository(session)
        self.eval_sets = EvalSetRepository(session)
        self.eval_results = EvalResultRepository(session)
