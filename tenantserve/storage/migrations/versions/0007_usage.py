"""The usage store: `usage_events` (the processed-event ledger, one row per event id)
and `usage_buckets` (per-tenant minute and hour sums by model, adapter and tier).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("event_id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(80), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("adapter", sa.String(300), nullable=False),
        sa.Column("pool", sa.String(128), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_token_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("engine_seconds", sa.Float, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('completed', 'cancelled', 'error')", name="ck_usage_events_status"
        ),
    )
    op.create_index("ix_usage_events_tenant_ended", "usage_events", ["tenant_id", "ended_at"])
    op.create_index("ix_usage_events_ended", "usage_events", ["ended_at"])
    op.create_table(
        "usage_buckets",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("granularity", sa.String(8), primary_key=True),
        sa.Column("bucket_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("adapter", sa.String(300), primary_key=True),
        sa.Column("tier", sa.String(16), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("cancelled", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("engine_seconds", sa.Float, nullable=False),
        sa.CheckConstraint(
            "granularity IN ('minute', 'hour')", name="ck_usage_buckets_granularity"
        ),
    )
    op.create_index(
        "ix_usage_buckets_granularity_start", "usage_buckets", ["granularity", "bucket_start"]
    )


def downgrade() -> None:
    op.drop_index("ix_usage_buckets_granularity_start", table_name="usage_buckets")
    op.drop_table("usage_buckets")
    op.drop_index("ix_usage_events_ended", table_name="usage_events")
    op.drop_index("ix_usage_events_tenant_ended", table_name="usage_events")
    op.drop_table("usage_events")
