"""`RegistryUnitOfWork`: one transaction around model-registry changes (model versions,
tenant adapters and rollouts; `storage/unit_of_work.py`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.registry.repository import (
    AdapterRepository,
    ModelRepository,
    RolloutRepository,
)
from tenantserve.storage.unit_of_work import SqlUnitOfWork


class RegistryUnitOfWork(SqlUnitOfWork):
    """Model versions, tenant adapters and rollouts, in one session."""

    models: ModelRepository
    adapters: AdapterRepository
    rollouts: RolloutRepository

    def _open(self, session: AsyncSession) -> None:
        self.models = ModelRepository(session)
        self.adapters = AdapterRepository(session)
        self.rollouts = RolloutRepository(session)
