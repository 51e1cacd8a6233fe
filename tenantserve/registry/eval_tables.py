"""SQLAlchemy Core tables `eval_sets` and `eval_results` (the domain classes in `evals.py`
know nothing of them). Mirror migration 0011; a test checks that the migrated schema and
these agree.

An eval set is attached to a target: `name` (every version of a model), `name@version`,
or a tenant's adapter key `adapter:<tenant>/<name>` (then `tenant_id` is set and only that
tenant reads it); one set of a name per target. A result row per run of one set against
one version ref, with its per-item outcomes as JSON. Timestamps are UTC-aware.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from tenantserve.tenancy.tables import UtcDateTime

metadata = MetaData()

eval_sets = Table(
    "eval_sets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("target", String(200), nullable=False),
    Column("tenant_id", String(64), nullable=True),
    Column("name", String(64), nullable=False),
    Column("digest", String(80), nullable=False),
    # The set as `EvalSet.to_json` writes it.
    Column("body", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("target", "name", name="uq_eval_sets_target_name"),
    Index("ix_eval_sets_tenant_id", "tenant_id"),
)

eval_results = Table(
    "eval_results",
    metadata,
    Column("id", String(32), primary_key=True),
    # `name@version` or `adapter:<tenant>/<name>@<n>`; `model` is the part before `@`.
    Column("ref", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("tenant_id", String(64), nullable=True),
    Column("set_name", String(64), nullable=False),
    Column("set_digest", String(80), nullable=False),
    Column("passed", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("score", Float, nullable=False),
    # A list of {"id", "passed", "output", "error"}.
    Column("outcomes", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_eval_results_ref_set", "ref", "set_name", "created_at"),
    Index("ix_eval_results_model", "model"),
)
