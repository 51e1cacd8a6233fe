"""Adapter versions: `version` (1, 2, ...) and `superseded_at` on `tenant_adapters`, and
(tenant_id, name, version) unique instead of (tenant_id, name). Batch mode, so SQLite
(which cannot drop a constraint in place) rebuilds the table.

Revision ID: 0006
Revises: 0005
Create Date: 2025-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenant_adapters") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("uq_tenant_adapters_tenant_name", type_="unique")
        batch.create_unique_constraint(
            "uq_tenant_adapters_tenant_name_version", ["tenant_id", "name", "version"]
        )


def downgrade() -> None:
    # Only the newest version of each name survives a downgrade.
    op.execute(
        "DELETE FROM tenant_adapters WHERE version < (SELECT MAX(t.version) FROM "
        "tenant_adapters t WHERE t.tenant_id = tenant_adapters.tenant_id AND "
        "t.name = tenant_adapters.name)"
    )
    with op.batch_alter_table("tenant_adapters") as batch:
        batch.drop_constraint("uq_tenant_adapters_tenant_name_version", type_="unique")
        batch.create_unique_constraint("uq_tenant_adapters_tenant_name", ["tenant_id", "name"])
        batch.drop_column("superseded_at")
        batch.drop_column("version")
