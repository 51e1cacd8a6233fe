"""Observability: request records, metrics, traces and structured logs; every one
carries the tenant (see `docs/operations.md`)."""
