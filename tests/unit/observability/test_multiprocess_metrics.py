"""Several gateway processes, one scrape: with PROMETHEUS_MULTIPROC_DIR every process
writes its values there and `/metrics` (any process) shows them all, summed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tenantserve.config import Settings
from tenantserve.observability.config import ObservabilityConfig
from tenantserve.observability.telemetry import Telemetry

WORKER = textwrap.dedent(
    """
    import sys
    from prometheus_client import CollectorRegistry
    from tenantserve.observability.metrics import GatewayMetrics, TenantLabeler

    metrics = GatewayMetrics(CollectorRegistry(), TenantLabeler(top_k=5))
    for _ in range(int(sys.argv[2])):
        metrics.finished(sys.argv[1], False, "m", "completed", 7, 3, 0, 0.1, 0.2, 0.0)
        metrics.finished("shared", False, "m", "completed", 1, 1, 0, 0.1, 0.2, 0.0)
    """
)


async def test_two_processes_writing_one_scrape_shows_both(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for tenant, n in (("alpha", 2), ("beta", 3)):
        subprocess.run([sys.executable, "-c", WORKER, tenant, str(n)], env=env, check=True)

    settings = Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    assert settings.observability.multiproc_dir == directory
    telemetry = Telemetry.build(settings.observability)
    text = (await telemetry.scrape()).decode()

    def sample(tenant: str, name: str) -> float:
        prefix = f'{name}{{model="m",status="completed",tenant="{tenant}"}} '
        prefix_nostatus = f'{name}{{model="m",tenant="{tenant}"}} '
        for line in text.splitlines():
            if line.startswith((prefix, prefix_nostatus)):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} for {tenant} not in the scrape:\n{text}")

    assert sample("alpha", "tenantserve_requests_total") == 2
    assert sample("beta", "tenantserve_requests_total") == 3
    assert sample("shared", "tenantserve_requests_total") == 5  # summed over processes
    assert sample("alpha", "tenantserve_input_tokens_total") == 14
    assert sample("beta", "tenantserve_request_duration_seconds_count") == 3


def test_observability_settings_come_from_the_environment() -> None:
    env = {
        "TENANTSERVE_METRICS_TOP_K": "7",
        "TENANTSERVE_METRICS_PORT": "9464",
        "TENANTSERVE_OTLP_ENDPOINT": "http://collector:4318/v1/traces",
        "TENANTSERVE_LOG_FORMAT": "TEXT",
    }
    assert Settings.from_env(env).observability == ObservabilityConfig(
        metrics_top_k=7,
        metrics_port=9464,
        otlp_endpoint="http://collector:4318/v1/traces",
        log_format="text",
    )
    assert Settings.from_env({}).observability.otlp_endpoint is None  # tracing off
