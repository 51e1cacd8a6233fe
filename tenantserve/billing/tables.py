"""SQLAlchemy Core tables of billing (mirror migration 0008; the domain knows nothing of
them). Money is `DecimalType` (NUMERIC on PostgreSQL, a decimal string on SQLite; read
back as `Decimal`), never float. The tier history
(`tenant_tier_changes`) belongs to tenancy (`tenancy/tables.py`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from tenantserve.tenancy.tables import UtcDateTime

metadata = MetaData()


class DecimalType(TypeDecorator[Decimal]):
    """An exact decimal on every backend: NUMERIC on PostgreSQL, a decimal string on
    SQLite (whose NUMERIC affinity would store a float)."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 20, scale: int = 6) -> None:
        super().__init__(precision, scale, asdecimal=True)
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(self.precision + 2))
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        exact = Decimal(value)
        if not exact.is_finite():
            raise ValueError(f"not a finite decimal: {value!r}")
        return f"{exact:f}" if dialect.name == "sqlite" else exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return (
            None
            if value is None
            else Decimal(str(value))
            if not isinstance(value, Decimal)
            else value
        )


USD = DecimalType(20, 6)
RATE = DecimalType(20, 6)
_TIERS = "tier IN ('free', 'standard', 'premium')"

token_prices = Table(
    "billing_token_prices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("adapter_class", String(16), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("input_usd_per_mtok", RATE, nullable=False),
    Column("cached_input_usd_per_mtok", RATE, nullable=False),
    Column("output_usd_per_mtok", RATE, nullable=False),
    Column("effective_from", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint(
        "adapter_class IN ('base', 'adapter')", name="ck_billing_token_prices_adapter_class"
    ),
    CheckConstraint(_TIERS, name="ck_billing_token_prices_tier"),
    UniqueConstraint(
        "model", "adapter_class", "tier", "effective_from", name="uq_billing_token_prices"
    ),
)

platform_fees = Table(
    "billing_platform_fees",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tier", String(16), nullable=False),
    Column("usd_per_month", USD, nullable=False),
    Column("effective_from", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint(_TIERS, name="ck_billing_platform_fees_tier"),
    UniqueConstraint("tier", "effective_from", name="uq_billing_platform_fees"),
)

engine_costs = Table(
    "billing_engine_costs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("usd_per_engine_hour", RATE, nullable=False),
    Column("effective_from", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("effective_from", name="uq_billing_engine_costs"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("period", String(7), nullable=False),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal_usd", USD, nullable=False),
    Column("credits_usd", USD, nullable=False),
    Column("total_usd", USD, nullable=False),
    Column("generated_at", UtcDateTime, nullable=False),
    Column("finalized_at", UtcDateTime, nullable=True),
    Column("stripe_customer_id", String(80), nullable=True),
    Column("stripe_invoice_id", String(80), nullable=True),
    Column("exported_at", UtcDateTime, nullable=True),
    CheckConstraint("status IN ('draft', 'finalized')", name="ck_invoices_status"),
    UniqueConstraint("tenant_id", "period", name="uq_invoices_tenant_period"),
    Index("ix_invoices_period", "period"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column(
        "invoice_id",
        String(40),
        ForeignKey("invoices.id", name="fk_invoice_lines_invoice_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("line_key", String(400), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("description", String(500), nullable=False),
    Column("model", String(200), nullable=False),
    Column("adapter_class", String(16), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("input_usd_per_mtok", RATE, nullable=True),
    Column("cached_input_usd_per_mtok", RATE, nullable=True),
    Column("output_usd_per_mtok", RATE, nullable=True),
    Column("quantity", DecimalType(20, 9), nullable=False),
    Column("unit_usd", USD, nullable=True),
    Column("amount_usd", USD, nullable=False),
    Column("reference", String(80), nullable=True),
    CheckConstraint("kind IN ('usage', 'platform_fee', 'credit')", name="ck_invoice_lines_kind"),
    UniqueConstraint("invoice_id", "line_key", name="uq_invoice_lines_key"),
)

credit_grants = Table(
    "credit_grants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("amount_usd", USD, nullable=False),
    Column("granted_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("reason", String(500), nullable=False),
    Column("credit_note_id", String(40), nullable=True),
    Index("ix_credit_grants_tenant", "tenant_id"),
)

credit_applications = Table(
    "credit_applications",
    metadata,
    Column(
        "invoice_id",
        String(40),
        ForeignKey("invoices.id", name="fk_credit_applications_invoice_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "grant_id",
        String(40),
        ForeignKey("credit_grants.id", name="fk_credit_applications_grant_id"),
        primary_key=True,
    ),
    Column("amount_usd", USD, nullable=False),
    Index("ix_credit_applications_grant", "grant_id"),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column(
        "invoice_id",
        String(40),
        ForeignKey("invoices.id", name="fk_credit_notes_invoice_id"),
        nullable=False,
    ),
    Column("tenant_id", String(40), nullable=False),
    Column("amount_usd", USD, nullable=False),
    Column("reason", String(500), nullable=False),
    # [{"line_key", "amount_usd" (a decimal string)}]
    Column("lines", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_credit_notes_invoice", "invoice_id"),
)
