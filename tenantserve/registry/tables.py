"""SQLAlchemy Core tables `model_versions`, `tenant_adapters` and `rollouts` (the domain
classes know nothing of them).

Mirror migrations 0003, 0004, 0005 and 0006; a test checks that the migrated schema and these agree.
One row per immutable `name@version` (the primary key); the file manifest and the
runtimes are JSON. Timestamps are UTC-aware on every backend (`UtcDateTime`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from tenantserve.tenancy.tables import UtcDateTime

metadata = MetaData()

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("digest", String(80), nullable=False),
    Column("format", String(16), nullable=False),
    Column("quantization", String(16), nullable=False),
    Column("runtimes", JSON, nullable=False),
    Column("min_memory_bytes", BigInteger, nullable=False),
    Column("device", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    # "public" or the id of the one tenant that may use it.
    Column("scope", String(64), nullable=False),
    Column("artifact_uri", String(1024), nullable=False),
    # A list of {"path", "size_bytes", "sha256"}, sorted by path.
    Column("files", JSON, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("deprecated_at", UtcDateTime, nullable=True),
    Column("deprecation_end_date", Date, nullable=True),
    Column("replacement", String(200), nullable=True),
    Column("archived_at", UtcDateTime, nullable=True),
    CheckConstraint(
        "status IN ('active', 'canary', 'deprecated', 'archived')",
        name="ck_model_versions_status",
    ),
    Index("ix_model_versions_scope", "scope"),
)

# One row per uploaded adapter version; (tenant_id, name, version) is unique, so of two
# concurrent uploads of the same new version exactly one is inserted.
tenant_adapters = Table(
    "tenant_adapters",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("base_model", String(200), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("target_modules", JSON, nullable=False),
    Column("digest", String(80), nullable=False),
    Column("artifact_uri", String(1024), nullable=False),
    # A list of {"path", "size_bytes", "sha256"}, sorted by path.
    Column("files", JSON, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("report", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("superseded_at", UtcDateTime, nullable=True),
    CheckConstraint(
        "status IN ('validating', 'ready', 'failed')", name="ck_tenant_adapters_status"
    ),
    UniqueConstraint("tenant_id", "name", "version", name="uq_tenant_adapters_tenant_name_version"),
)

# One row per rollout; `active_model` is the model name while the rollout runs and NULL
# once it is done or rolled back, so its unique constraint allows one running rollout per
# model (NULLs never collide, on SQLite or PostgreSQL). `revision` guards against two
# processes applying a step to the same rollout.
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("active_model", String(128), nullable=True),
    Column("stable_ref", String(200), nullable=False),
    Column("candidate_ref", String(200), nullable=False),
    # The plan's options: shadow_percent, canary_steps, step_seconds, min_requests, margins.
    Column("plan", JSON, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("step_index", Integer, nullable=True),
    Column("percent", Float, nullable=False),
    Column("step_started_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    # A list of {"at", "phase", "percent", "reason"}, oldest first.
    Column("history", JSON, nullable=False),
    Column("revision", Integer, nullable=False),
    CheckConstraint(
        "phase IN ('shadow', 'canary', 'done', 'rolled_back')", name="ck_rollouts_phase"
    ),
    UniqueConstraint("active_model", name="uq_rollouts_active_model"),
    Index("ix_rollouts_model", "model"),
)
