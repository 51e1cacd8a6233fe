"""SQLAlchemy Core tables of the usage store (mirror migration 0007).

`usage_events` is the processed-event ledger: one row per event id, written in the same
transaction as the bucket increments it caused, so an event is counted once however
often it arrives. It holds the whole event, so buckets and invoices can be rebuilt
from it. `usage_buckets` holds per-tenant sums per minute and per hour, keyed by model,
adapter ("" for none) and tier; the token columns hold billable tokens (see
`metering/events.py`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from tenantserve.tenancy.tables import UtcDateTime

metadata = MetaData()

usage_events = Table(
    "usage_events",
    metadata,
    Column("event_id", String(40), primary_key=True),
    Column("request_id", String(80), nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    Column("adapter", String(300), nullable=False),
    Column("pool", String(128), nullable=False),
    Column("region", String(16), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("first_token_at", UtcDateTime, nullable=True),
    Column("ended_at", UtcDateTime, nullable=False),
    Column("engine_seconds", Float, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    CheckConstraint("status IN ('completed', 'cancelled', 'error')", name="ck_usage_events_status"),
    Index("ix_usage_events_tenant_ended", "tenant_id", "ended_at"),
    Index("ix_usage_events_ended", "ended_at"),
)

usage_buckets = Table(
    "usage_buckets",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("granularity", String(8), primary_key=True),
    Column("bucket_start", UtcDateTime, primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("adapter", String(300), primary_key=True),
    Column("tier", String(16), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("cancelled", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("engine_seconds", Float, nullable=False),
    CheckConstraint("granularity IN ('minute', 'hour')", name="ck_usage_buckets_granularity"),
    Index("ix_usage_buckets_granularity_start", "granularity", "bucket_start"),
)
