"""Metering: one `UsageEvent` per request, a durable outbox, the stream, the aggregator
and the usage store (per-tenant minute and hour buckets)."""
