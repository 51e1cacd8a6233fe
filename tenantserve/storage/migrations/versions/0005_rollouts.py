"""Rollouts of new model versions: one row each, with its history; at most one running
rollout per model (a unique `active_model`, NULL once the rollout is over).

Revision ID: 0005
Revises: 0004
Create Date: 2025-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("active_model", sa.String(128), nullable=True),
        sa.Column("stable_ref", sa.String(200), nullable=False),
        sa.Column("candidate_ref", sa.String(200), nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=True),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.CheckConstraint(
            "phase IN ('shadow', 'canary', 'done', 'rolled_back')", name="ck_rollouts_phase"
        ),
        sa.UniqueConstraint("active_model", name="uq_rollouts_active_model"),
    )
    op.create_index("ix_rollouts_model", "rollouts", ["model"])


def downgrade() -> None:
    op.drop_index("ix_rollouts_model", table_name="rollouts")
    op.drop_table("rollouts")
