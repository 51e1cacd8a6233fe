"""The observability settings: `RequestRecordsConfig` (per-request records and the SLO
evaluator) and `ObservabilityConfig` (metrics, traces, logs). `config.py` reads them from
the environment into `Settings`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tenantserve.errors import ConfigError


@dataclass(frozen=True)
class RequestRecordsConfig:
    """The per-request records (`observability/record_*.py`) and the SLO evaluator."""

    # Records older than this are deleted (checked every `retention_check_s`).
    retention_days: float = 30.0
    retention_check_s: float = 3600.0
    # The background writer: one INSERT per `batch_size` records or `flush_interval_s`;
    # records arriving while `queue_size` wait are dropped (and counted).
    flush_interval_s: float = 0.15
    batch_size: int = 500
    queue_size: int = 10_000
    # Opted-in prompt and completion text is cut to this many characters each.
    max_content_chars: int = 8192
    # How often the SLO evaluator runs (burn-rate alerts become operator events).
    slo_evaluate_every_s: float = 30.0

    def __post_init__(self) -> None:
        positive = ("retention_days", "retention_check_s", "flush_interval_s", "batch_size")
        for name in (*positive, "queue_size", "max_content_chars", "slo_evaluate_every_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"request records: {name} must be positive")


@dataclass(frozen=True)
class ObservabilityConfig:
    """Metrics, traces and logs (`tenantserve/observability/`)."""

    # Tenants with their own `tenant` label besides the premium ones (the rest: `other`).
    metrics_top_k: int = 20
    # A separate port for `/metrics` (no credentials, bind it privately); None: only the
    # main port's `/metrics`, behind the admin token.
    metrics_port: int | None = None
    # prometheus-client's multiprocess directory (PROMETHEUS_MULTIPROC_DIR): every
    # gateway process writes there and a scrape aggregates them all.
    multiproc_dir: Path | None = None
    # OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); None: no tracing.
    otlp_endpoint: str | None = None
    # `tenantserve up`'s log lines: "json" (one object per line) or "text".
    log_format: str = "json"

    def __post_init__(self) -> None:
        if self.metrics_top_k < 0:
            raise ConfigError("TENANTSERVE_METRICS_TOP_K must be 0 or more")
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"TENANTSERVE_LOG_FORMAT must be json or text: {self.log_format!r}")
