"""The model registry: one row per immutable model version.

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("quantization", sa.String(16), nullable=False),
        sa.Column("runtimes", sa.JSON, nullable=False),
        sa.Column("min_memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("device", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("artifact_uri", sa.String(1024), nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deprecated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deprecation_end_date", sa.Date, nullable=True),
        sa.Column("replacement", sa.String(200), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'canary', 'deprecated', 'archived')",
            name="ck_model_versions_status",
        ),
    )
    op.create_index("ix_model_versions_scope", "model_versions", ["scope"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_scope", table_name="model_versions")
    op.drop_table("model_versions")
