"""SQLAlchemy Core tables for tenants and API keys (the domain classes know nothing of them).

Mirrors migrations 0001, 0002, 0008 (`tenant_tier_changes`), 0010 (`log_content`) and
0012 (`pool`); a
test checks that the migrated schema and these tables agree.
Timestamps are stored as UTC and read back timezone-aware on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import false
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass a UTC-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("region", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("limits", JSON, nullable=False),
    # A list of `Quota.to_dict()` objects (migration 0002).
    Column("quotas", JSON, nullable=False, server_default="[]"),
    # Whether its request records keep prompt and completion text (migration 0010).
    Column("log_content", Boolean, nullable=False, server_default=false()),
    # The dedicated pool it was moved to; NULL: the shared pools (migration 0012).
    Column("pool", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("tier IN ('free', 'standard', 'premium')", name="ck_tenants_tier"),
    CheckConstraint("region IN ('us', 'eu')", name="ck_tenants_region"),
    CheckConstraint("status IN ('active', 'suspended')", name="ck_tenants_status"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(80), primary_key=True),
    Column(
        "tenant_id",
        String(40),
        ForeignKey("tenants.id", name="fk_api_keys_tenant_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("prefix", String(80), nullable=False, unique=True),
    Column("secret_hash", String(160), nullable=False),
    Column("allowed_models", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Index("ix_api_keys_tenant_id", "tenant_id"),
)

# Append-only: a row when a tenant is created and whenever its tier changes (billing
# prorates the monthly platform fee by the time spent at each tier).
tenant_tier_changes = Table(
    "tenant_tier_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "tenant_id",
        String(40),
        ForeignKey("tenants.id", name="fk_tenant_tier_changes_tenant_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tier", String(16), nullable=False),
    Column("effective_at", UtcDateTime, nullable=False),
    CheckConstraint("tier IN ('free', 'standard', 'premium')", name="ck_tenant_tier_changes_tier"),
    Index("ix_tenant_tier_changes_tenant_effective", "tenant_id", "effective_at"),
)
