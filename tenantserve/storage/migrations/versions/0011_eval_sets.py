"""Eval sets (attached to a model, a model version or a tenant's adapter) and their
results per version (issue 6, the eval gate).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "eval_sets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("target", "name", name="uq_eval_sets_target_name"),
    )
    op.create_index("ix_eval_sets_tenant_id", "eval_sets", ["tenant_id"])
    op.create_table(
        "eval_results",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("set_name", sa.String(64), nullable=False),
        sa.Column("set_digest", sa.String(80), nullable=False),
        sa.Column("passed", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("outcomes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_eval_results_ref_set", "eval_results", ["ref", "set_name", "created_at"])
    op.create_index("ix_eval_results_model", "eval_results", ["model"])


def downgrade() -> None:
    op.drop_index("ix_eval_results_model", table_name="eval_results")
    op.drop_index("ix_eval_results_ref_set", table_name="eval_results")
    op.drop_table("eval_results")
    op.drop_index("ix_eval_sets_tenant_id", table_name="eval_sets")
    op.drop_table("eval_sets")
