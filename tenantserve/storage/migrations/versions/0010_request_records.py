"""Request records (`request_records`: one row per request that reached admission, with
its timings and outcome; prompt and completion text only for tenants that opted in) and
the opt-in itself (`tenants.log_content`, default false).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "tenants",
        sa.Column("log_content", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "request_records",
        sa.Column("request_id", sa.String(80), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("failed", sa.Boolean, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("adapter", sa.String(300), nullable=False),
        sa.Column("pool", sa.String(128), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("admission_ms", sa.Float, nullable=False),
        sa.Column("queue_ms", sa.Float, nullable=False),
        sa.Column("engine_queue_ms", sa.Float, nullable=True),
        sa.Column("adapter_wait_ms", sa.Float, nullable=True),
        sa.Column("ttft_ms", sa.Float, nullable=True),
        sa.Column("total_ms", sa.Float, nullable=False),
        sa.Column("engine_seconds", sa.Float, nullable=False),
        sa.Column("preemptions", sa.Integer, nullable=False),
        sa.Column("prompt_text", sa.Text, nullable=True),
        sa.Column("completion_text", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_request_records_tenant_started", "request_records", ["tenant_id", "started_at"]
    )
    op.create_index("ix_request_records_started", "request_records", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_request_records_started", table_name="request_records")
    op.drop_index("ix_request_records_tenant_started", table_name="request_records")
    op.drop_table("request_records")
    op.drop_column("tenants", "log_content")
