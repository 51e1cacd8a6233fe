"""Tenancy use cases: create and update tenants, issue and revoke keys, authenticate.

`authenticate(credential)` turns a bearer credential (API key or JWT) into the
`TenantContext` that travels with the request. The tenant always comes from the
stored key or the verified token, never from anything else the client sends.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from tenantserve.admission.quotas import parse_quotas
from tenantserve.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    TenantSuspendedError,
)
from tenantserve.tenancy.jwt_auth import JwtVerifier
from tenantserve.tenancy.keys import ApiKeyHasher, looks_like_api_key, parse_key
from tenantserve.tenancy.model import (
    ApiKey,
    Region,
    Tenant,
    TenantContext,
    TenantLimits,
    TenantStatus,
    new_tenant_id,
    normalize_allowed_models,
    parse_region,
    parse_status,
    parse_tier,
    validate_tenant_name,
)
from tenantserve.tenancy.unit_of_work import UnitOfWork
from tenantserve.tiers import Tier

MAX_KEY_LIFETIME_DAYS = 3650


class Unchanged(enum.Enum):
    """The default of an `update_tenant` field that None would set (None means clear)."""

    UNCHANGED = enum.auto()


UNCHANGED = Unchanged.UNCHANGED


def utc_now() -> datetime:
    return datetime.now(UTC)


class NewKey(NamedTuple):
    """A key just created: the stored record and the plaintext, which is shown once."""

    key: ApiKey
    plaintext: str


class TenancyService:
    """Tenant and key use cases over a unit of work; authentication for the gateway."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        hasher: ApiKeyHasher,
        jwt: JwtVerifier | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow = uow_factory
        self._hasher = hasher
        self._jwt = jwt if jwt is not None and jwt.enabled else None
        self._clock = clock

    async def create_tenant(
        self,
        name: str,
        tier: str | Tier,
        region: str | Region,
        limits: Mapping[str, int | None] | None = None,
    ) -> Tenant:
        """Create an active tenant; InvalidRequestError names any bad field."""
        tenant = Tenant(
            id=new_tenant_id(),
            name=validate_tenant_name(name),
            tier=parse_tier(tier),
            region=parse_region(region),
            status=TenantStatus.ACTIVE,
            created_at=self._clock(),
            limits=TenantLimits.from_dict(limits or {}),
        )
        async with self._uow() as uow:
            await uow.tenants.add(tenant)
            await uow.tenants.add_tier_change(tenant.id, tenant.tier, tenant.created_at)
            await uow.commit()
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant:
        """The tenant, or NotFoundError."""
        async with self._uow() as uow:
            return await _require_tenant(uow, tenant_id)

    async def list_tenants(self) -> Sequence[Tenant]:
        """Every tenant, oldest first."""
        async with self._uow() as uow:
            return await uow.tenants.list()

    async def placed_pools(self) -> set[str]:
        """The dedicated pools at least one tenant is placed on (`tenantserve tenant move`)."""
        async with self._uow() as uow:
            return await uow.tenants.placed_pools()

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        tier: str | Tier | None = None,
        region: str | Region | None = None,
        status: str | TenantStatus | None = None,
        limits: Mapping[str, int | None] | None = None,
        quotas: Sequence[Mapping[str, object]] | None = None,
        log_content: bool | None = None,
        pool: str | Unchanged | None = UNCHANGED,
    ) -> Tenant:
        """Change the given fields (None: unchanged); `limits` merges, a null limit resets
        it to the tier's default; `quotas` replaces the whole list (`[]` removes them all),
        each parsed by `Quota.from_dict`, at most one per (metric, period); `log_content`
        opts the tenant in (or out) of prompt and completion text in its request records;
        `pool`: its dedicated pool (None: back to the shared pools) — set by a tenant move
        (`gateway/tenant_move.py`), which warms the pool and drains the old one."""
        async with self._uow() as uow:
            tenant = await _require_tenant(uow, tenant_id)
            if name is not None:
                tenant.name = validate_tenant_name(name)
            old_tier = tenant.tier
            if tier is not None:
                tenant.tier = parse_tier(tier)
            if region is not None:
                tenant.region = parse_region(region)
            if status is not None:
                tenant.status = parse_status(status)
            if limits is not None:
                tenant.limits = tenant.limits.merged(limits)
            if quotas is not None:
                tenant.quotas = parse_quotas(quotas)
            if log_content is not None:
                tenant.log_content = bool(log_content)
            if not isinstance(pool, Unchanged):
                tenant.pool = pool
            now = self._clock()
            await uow.tenants.update(tenant, now)
            if tenant.tier is not old_tier:
                await uow.tenants.add_tier_change(tenant.id, tenant.tier, now)
            await uow.commit()
        return tenant

    async def create_key(
        self,
        tenant_id: str,
        expires_days: float | None = None,
        allowed_models: Iterable[str] = (),
    ) -> NewKey:
        """Issue a key for the tenant; the plaintext in the result is never stored."""
        now = self._clock()
        expires_at = None
        if expires_days is not None:
            if not 0 < expires_days <= MAX_KEY_LIFETIME_DAYS:
                raise InvalidRequestError(
                    f"expires_days must be in (0, {MAX_KEY_LIFETIME_DAYS}], not {expires_days!r}"
                )
            expires_at = now + timedelta(days=expires_days)
        generated = self._hasher.generate()
        key = ApiKey(
            id=generated.key_id,
            tenant_id=tenant_id,
            prefix=generated.prefix,
            secret_hash=generated.secret_hash,
            created_at=now,
            expires_at=expires_at,
            allowed_models=normalize_allowed_models(allowed_models),
        )
        async with self._uow() as uow:
            await _require_tenant(uow, tenant_id)
            await uow.tenants.add_key(key)
            await uow.commit()
        return NewKey(key=key, plaintext=generated.plaintext)

    async def list_keys(self, tenant_id: str) -> Sequence[ApiKey]:
        """The tenant's keys (hashes only), or NotFoundError for an unknown tenant."""
        async with self._uow() as uow:
            await _require_tenant(uow, tenant_id)
            return await uow.tenants.list_keys(tenant_id)

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke the key (idempotent: the first revocation time stays); NotFoundError."""
        async with self._uow() as uow:
            if not await uow.tenants.revoke_key(key_id, self._clock()):
                raise NotFoundError(f"no API key {key_id!r}")
            key = await uow.tenants.get_key(key_id)
            await uow.commit()
        assert key is not None
        return key

    async def authenticate(self, credential: str) -> TenantContext:
        """The context for a bearer credential (API key or JWT), or an AuthError subclass."""
        credential = credential.strip()
        if not credential:
            raise AuthenticationError("missing credentials")
        if looks_like_api_key(credential):
            return await self._authenticate_key(credential)
        if self._jwt is not None and credential.count(".") == 2:
            return await self._authenticate_jwt(credential)
        raise AuthenticationError("invalid API key")

    async def _authenticate_key(self, credential: str) -> TenantContext:
        presented = parse_key(credential)
        async with self._uow() as uow:
            stored = await uow.tenants.get_key(presented.key_id)
            key = self._hasher.verify(stored, presented, self._clock())
            tenant = await uow.tenants.get(key.tenant_id)
        if tenant is None:
            raise AuthenticationError("invalid API key")
        _require_active(tenant)
        return TenantContext(
            tenant_id=tenant.id,
            tier=tenant.tier,
            region=tenant.region,
            key_id=key.id,
            allowed_models=frozenset(key.allowed_models),
            limits=tenant.limits,
            quotas=tenant.quotas,
            log_content=tenant.log_content,
            pool=tenant.pool,
        )

    async def _authenticate_jwt(self, token: str) -> TenantContext:
        assert self._jwt is not None
        identity = self._jwt.verify(token)
        async with self._uow() as uow:
            tenant = await uow.tenants.get(identity.tenant_id)
        if tenant is None:
            raise AuthenticationError("JWT names an unknown tenant")
        _require_active(tenant)
        return TenantContext(
            tenant_id=tenant.id,
            tier=tenant.tier,
            region=tenant.region,
            subject=identity.subject,
            allowed_models=frozenset(identity.allowed_models),
            limits=tenant.limits,
            quotas=tenant.quotas,
            log_content=tenant.log_content,
            pool=tenant.pool,
        )


async def _require_tenant(uow: UnitOfWork, tenant_id: str) -> Tenant:
    tenant = await uow.tenants.get(tenant_id)
    if tenant is None:
        raise NotFoundError(f"no tenant {tenant_id!r}")
    return tenant


def _require_active(tenant: Tenant) -> None:
    if not tenant.is_active:
        raise TenantSuspendedError("tenant is suspended")
