"""`UnitOfWork`: one transaction around tenancy changes (`storage/unit_of_work.py`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.storage.unit_of_work import SqlUnitOfWork
from tenantserve.tenancy.repository import TenantRepository


class UnitOfWork(SqlUnitOfWork):
    """Tenants and their keys, in one session."""

    tenants: TenantRepository

    def _open(self, session: AsyncSession) -> None:
        self.tenants = TenantRepository(session)
