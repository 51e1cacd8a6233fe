"""SQLAlchemy Core table of the audit log (the domain in `entry.py` knows nothing of it).

Mirrors migration 0009, which also installs the triggers that refuse UPDATE, DELETE (and
on PostgreSQL TRUNCATE) of `audit_log`; a test checks that the migrated schema and this
table agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from tenantserve.tenancy.tables import UtcDateTime

metadata = MetaData()

AUDIT_TABLE = "audit_log"

audit_log = Table(
    AUDIT_TABLE,
    metadata,
    # Assigned by the appender under its lock: 1, 2, 3, ... with no gaps.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(40), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(80), nullable=False),
    Column("target", String(300), nullable=False),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("id", name="uq_audit_log_id"),
    Index("ix_audit_log_action_seq", "action", "seq"),
    Index("ix_audit_log_target_seq", "target", "seq"),
)
