"""SQLAlchemy Core table of the request records (mirrors migration 0010).

One row per request that reached admission: admitted ones when they end (completed,
cancelled, error), refused ones when refused (`rejected`, with the HTTP status and error
code). `failed` marks a failure on our side (a 5xx, an engine or upstream error): what
availability counts. `prompt_text` / `completion_text` are NULL unless the tenant opted in.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

from tenantserve.tenancy.tables import UtcDateTime

metadata = MetaData()

request_records = Table(
    "request_records",
    metadata,
    Column("request_id", String(80), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("failed", Boolean, nullable=False),
    Column("model", String(200), nullable=False),
    Column("adapter", String(300), nullable=False),
    Column("pool", String(128), nullable=False),
    Column("region", String(16), nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("admission_ms", Float, nullable=False),
    Column("queue_ms", Float, nullable=False),
    Column("engine_queue_ms", Float, nullable=True),
    Column("adapter_wait_ms", Float, nullable=True),
    Column("ttft_ms", Float, nullable=True),
    Column("total_ms", Float, nullable=False),
    Column("engine_seconds", Float, nullable=False),
    Column("preemptions", Integer, nullable=False),
    Column("prompt_text", Text, nullable=True),
    Column("completion_text", Text, nullable=True),
    Index("ix_request_records_tenant_started", "tenant_id", "started_at"),
    Index("ix_request_records_started", "started_at"),
)
