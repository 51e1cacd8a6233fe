"""The JSON shapes of tenants and keys, shared by the admin API and the CLI (same JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tenantserve.tenancy.model import ApiKey, Tenant


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    """`{"id", "name", "tier", "region", "status", "limits", "quotas", "log_content",
    "created_at"}`;
    `quotas` is a list of `{"metric", "period", "limit", "enforcement"}`."""
    return {
        "id": tenant.id,
        "name": tenant.name,
        "tier": tenant.tier.value,
        "region": tenant.region.value,
        "status": tenant.status.value,
        "limits": tenant.limits.to_dict(),
        "quotas": [q.to_dict() for q in tenant.quotas],
        "log_content": tenant.log_content,
        "pool": tenant.pool,
        "created_at": _ts(tenant.created_at),
    }


def key_json(key: ApiKey, plaintext: str | None = None) -> dict[str, Any]:
    """A key's public record; `key` (the plaintext) only in the answer that created it."""
    out: dict[str, Any] = {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "prefix": key.prefix,
        "allowed_models": list(key.allowed_models),
        "created_at": _ts(key.created_at),
        "expires_at": _ts(key.expires_at),
        "revoked_at": _ts(key.revoked_at),
    }
    if plaintext is not None:
        out["key"] = plaintext
    return out
