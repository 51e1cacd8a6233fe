"""`TenantRepository`: tenants and API keys in and out of the database, as domain objects.

Works inside the caller's transaction (the unit of work's session); it never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.admission.quotas import parse_quotas
from tenantserve.tenancy.model import ApiKey, Region, Tenant, TenantLimits, TenantStatus
from tenantserve.tenancy.tables import api_keys, tenant_tier_changes, tenants
from tenantserve.tiers import Tier


class TenantRepository:
    """Tenants and their keys, read and written through one session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, tenant: Tenant) -> None:
        """Insert a new tenant."""
        await self._session.execute(
            insert(tenants).values(
                id=tenant.id,
                **_tenant_row(tenant),
                created_at=tenant.created_at,
                updated_at=tenant.created_at,
            )
        )

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""
        result = await self._session.execute(select(tenants).where(tenants.c.id == tenant_id))
        row = result.mappings().first()
        return _tenant(row) if row is not None else None

    async def list(self) -> Sequence[Tenant]:
        """Every tenant, oldest first."""
        result = await self._session.execute(
            select(tenants).order_by(tenants.c.created_at, tenants.c.id)
        )
        return [_tenant(row) for row in result.mappings()]

    async def placed_pools(self) -> set[str]:
        """The dedicated pools at least one tenant is placed on."""
        result = await self._session.execute(
            select(tenants.c.pool).where(tenants.c.pool.is_not(None)).distinct()
        )
        return {str(pool) for pool in result.scalars()}

    async def update(self, tenant: Tenant, now: datetime) -> None:
        """Write the tenant's mutable fields (name, tier, region, status, limits, quotas,
        log_content, pool)."""
        await self._session.execute(
            update(tenants)
            .where(tenants.c.id == tenant.id)
            .values(**_tenant_row(tenant), updated_at=now)
        )

    async def add_tier_change(self, tenant_id: str, tier: Tier, effective_at: datetime) -> None:
        """Append to the tenant's tier history (billing prorates its platform fee by it)."""
        await self._session.execute(
            insert(tenant_tier_changes).values(
                tenant_id=tenant_id, tier=tier.value, effective_at=effective_at
            )
        )

    async def add_key(self, key: ApiKey) -> None:
        """Insert a new API key (its tenant must exist)."""
        await self._session.execute(
            insert(api_keys).values(
                id=key.id,
                tenant_id=key.tenant_id,
                prefix=key.prefix,
                secret_hash=key.secret_hash,
                allowed_models=list(key.allowed_models),
                created_at=key.created_at,
                expires_at=key.expires_at,
                revoked_at=key.revoked_at,
            )
        )

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, or None."""
        result = await self._session.execute(select(api_keys).where(api_keys.c.id == key_id))
        row = result.mappings().first()
        return _api_key(row) if row is not None else None

    async def list_keys(self, tenant_id: str) -> Sequence[ApiKey]:
        """The tenant's keys, revoked and expired included, oldest first."""
        result = await self._session.execute(
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        return [_api_key(row) for row in result.mappings()]

    async def revoke_key(self, key_id: str, now: datetime) -> bool:
        """Mark the key revoked at `now` unless it already is; False when it does not exist."""
        key = await self.get_key(key_id)
        if key is None:
            return False
        if key.revoked_at is None:
            await self._session.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return True


def _tenant_row(tenant: Tenant) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "tier": tenant.tier.value,
        "region": tenant.region.value,
        "status": tenant.status.value,
        "limits": tenant.limits.to_dict(),
        "quotas": [q.to_dict() for q in tenant.quotas],
        "log_content": tenant.log_content,
        "pool": tenant.pool,
    }


def _tenant(row: RowMapping) -> Tenant:
    return Tenant(
        id=row["id"],
        name=row["name"],
        tier=Tier(row["tier"]),
        region=Region(row["region"]),
        status=TenantStatus(row["status"]),
        created_at=row["created_at"],
        limits=TenantLimits.from_dict(row["limits"] or {}),
        quotas=parse_quotas(row["quotas"] or ()),
        log_content=bool(row["log_content"]),
        pool=row["pool"],
    )


def _api_key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        prefix=row["prefix"],
        secret_hash=row["secret_hash"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        allowed_models=tuple(row["allowed_models"] or ()),
    )
