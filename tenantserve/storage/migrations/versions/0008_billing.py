"""Billing: the tenants' tier history, the price book (token prices, platform fees, the
internal engine cost rate; seeded with the defaults of `billing/pricebook.py`), invoices
and their lines, credit grants and their applications, credit notes.

Existing tenants get one tier-history row: their current tier since their creation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

from tenantserve.billing.tables import DecimalType

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

USD = DecimalType(20, 6)  # NUMERIC on PostgreSQL, a decimal string on SQLite
RATE = DecimalType(20, 6)

# The seeded price book, frozen here as of this revision (`billing/pricebook.py`'s
# `default_price_book()` holds the same numbers; a test checks they agree).
DEFAULT_EFFECTIVE_FROM = datetime(2000, 1, 1, tzinfo=UTC)
# (adapter class, tier) -> USD per million input, cached-input and output tokens.
SEED_TOKEN_PRICES = {
    ("base", "free"): ("0.50", "0.25", "1.50"),
    ("adapter", "free"): ("0.60", "0.30", "1.80"),
    ("base", "standard"): ("0.40", "0.20", "1.20"),
    ("adapter", "standard"): ("0.48", "0.24", "1.44"),
    ("base", "premium"): ("0.30", "0.15", "0.90"),
    ("adapter", "premium"): ("0.36", "0.18", "1.08"),
}
SEED_PLATFORM_FEES = {"free": "0", "standard": "49.00", "premium": "499.00"}
SEED_USD_PER_ENGINE_HOUR = "2.00"


def upgrade() -> None:
    _tier_history()
    _price_book()
    _invoices()
    _credits()
    _seed_defaults()


def _tier_history() -> None:
    op.create_table(
        "tenant_tier_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey(
                "tenants.id", name="fk_tenant_tier_changes_tenant_id", ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "tier IN ('free', 'standard', 'premium')", name="ck_tenant_tier_changes_tier"
        ),
    )
    op.create_index(
        "ix_tenant_tier_changes_tenant_effective",
        "tenant_tier_changes",
        ["tenant_id", "effective_at"],
    )
    op.execute(
        "INSERT INTO tenant_tier_changes (tenant_id, tier, effective_at) "
        "SELECT id, tier, created_at FROM tenants"
    )


def _price_book() -> None:
    op.create_table(
        "billing_token_prices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("adapter_class", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("input_usd_per_mtok", RATE, nullable=False),
        sa.Column("cached_input_usd_per_mtok", RATE, nullable=False),
        sa.Column("output_usd_per_mtok", RATE, nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "adapter_class IN ('base', 'adapter')", name="ck_billing_token_prices_adapter_class"
        ),
        sa.CheckConstraint(
            "tier IN ('free', 'standard', 'premium')", name="ck_billing_token_prices_tier"
        ),
        sa.UniqueConstraint(
            "model", "adapter_class", "tier", "effective_from", name="uq_billing_token_prices"
        ),
    )
    op.create_table(
        "billing_platform_fees",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("usd_per_month", USD, nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "tier IN ('free', 'standard', 'premium')", name="ck_billing_platform_fees_tier"
        ),
        sa.UniqueConstraint("tier", "effective_from", name="uq_billing_platform_fees"),
    )
    op.create_table(
        "billing_engine_costs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("usd_per_engine_hour", RATE, nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("effective_from", name="uq_billing_engine_costs"),
    )


def _invoices() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("subtotal_usd", USD, nullable=False),
        sa.Column("credits_usd", USD, nullable=False),
        sa.Column("total_usd", USD, nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stripe_customer_id", sa.String(80), nullable=True),
        sa.Column("stripe_invoice_id", sa.String(80), nullable=True),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('draft', 'finalized')", name="ck_invoices_status"),
        sa.UniqueConstraint("tenant_id", "period", name="uq_invoices_tenant_period"),
    )
    op.create_index("ix_invoices_period", "invoices", ["period"])
    op.create_table(
        "invoice_lines",
        sa.Column(
            "invoice_id",
            sa.String(40),
            sa.ForeignKey("invoices.id", name="fk_invoice_lines_invoice_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("line_key", sa.String(400), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("adapter_class", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("input_usd_per_mtok", RATE, nullable=True),
        sa.Column("cached_input_usd_per_mtok", RATE, nullable=True),
        sa.Column("output_usd_per_mtok", RATE, nullable=True),
        sa.Column("quantity", DecimalType(20, 9), nullable=False),
        sa.Column("unit_usd", USD, nullable=True),
        sa.Column("amount_usd", USD, nullable=False),
        sa.Column("reference", sa.String(80), nullable=True),
        sa.CheckConstraint(
            "kind IN ('usage', 'platform_fee', 'credit')", name="ck_invoice_lines_kind"
        ),
        sa.UniqueConstraint("invoice_id", "line_key", name="uq_invoice_lines_key"),
    )


def _credits() -> None:
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("amount_usd", USD, nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("credit_note_id", sa.String(40), nullable=True),
    )
    op.create_index("ix_credit_grants_tenant", "credit_grants", ["tenant_id"])
    op.create_table(
        "credit_applications",
        sa.Column(
            "invoice_id",
            sa.String(40),
            sa.ForeignKey(
                "invoices.id", name="fk_credit_applications_invoice_id", ondelete="CASCADE"
            ),
            primary_key=True,
        ),
        sa.Column(
            "grant_id",
            sa.String(40),
            sa.ForeignKey("credit_grants.id", name="fk_credit_applications_grant_id"),
            primary_key=True,
        ),
        sa.Column("amount_usd", USD, nullable=False),
    )
    op.create_index("ix_credit_applications_grant", "credit_applications", ["grant_id"])
    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "invoice_id",
            sa.String(40),
            sa.ForeignKey("invoices.id", name="fk_credit_notes_invoice_id"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("amount_usd", USD, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_credit_notes_invoice", "credit_notes", ["invoice_id"])


def _seed_defaults() -> None:
    now = datetime.now(UTC)
    at = {"effective_from": DEFAULT_EFFECTIVE_FROM, "created_at": now}

    def stamp() -> list[sa.ColumnClause[datetime]]:
        return [
            sa.column("effective_from", sa.DateTime(timezone=True)),
            sa.column("created_at", sa.DateTime(timezone=True)),
        ]

    prices = sa.table(
        "billing_token_prices",
        sa.column("model", sa.String),
        sa.column("adapter_class", sa.String),
        sa.column("tier", sa.String),
        sa.column("input_usd_per_mtok", RATE),
        sa.column("cached_input_usd_per_mtok", RATE),
        sa.column("output_usd_per_mtok", RATE),
        *stamp(),
    )
    op.bulk_insert(
        prices,
        [
            {
                "model": "*",
                "adapter_class": adapter_class,
                "tier": tier,
                "input_usd_per_mtok": Decimal(inp),
                "cached_input_usd_per_mtok": Decimal(cached),
                "output_usd_per_mtok": Decimal(out),
                **at,
            }
            for (adapter_class, tier), (inp, cached, out) in SEED_TOKEN_PRICES.items()
        ],
    )
    fees = sa.table(
        "billing_platform_fees",
        sa.column("tier", sa.String),
        sa.column("usd_per_month", USD),
        *stamp(),
    )
    op.bulk_insert(
        fees,
        [
            {"tier": tier, "usd_per_month": Decimal(usd), **at}
            for tier, usd in SEED_PLATFORM_FEES.items()
        ],
    )
    costs = sa.table("billing_engine_costs", sa.column("usd_per_engine_hour", RATE), *stamp())
    op.bulk_insert(costs, [{"usd_per_engine_hour": Decimal(SEED_USD_PER_ENGINE_HOUR), **at}])


def downgrade() -> None:
    op.drop_index("ix_credit_notes_invoice", table_name="credit_notes")
    op.drop_table("credit_notes")
    op.drop_index("ix_credit_applications_grant", table_name="credit_applications")
    op.drop_table("credit_applications")
    op.drop_index("ix_credit_grants_tenant", table_name="credit_grants")
    op.drop_table("credit_grants")
    op.drop_table("invoice_lines")
    op.drop_index("ix_invoices_period", table_name="invoices")
    op.drop_table("invoices")
    op.drop_table("billing_engine_costs")
    op.drop_table("billing_platform_fees")
    op.drop_table("billing_token_prices")
    op.drop_index("ix_tenant_tier_changes_tenant_effective", table_name="tenant_tier_changes")
    op.drop_table("tenant_tier_changes")
