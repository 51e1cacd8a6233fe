"""`Telemetry`: the gateway's metrics registry, pool collector and tracer, and the two
calls the request path makes into them: `finished` (from `Admission.close`, every
admitted request once) and `rejected` (from `Dispatcher.admit`, every refusal once).

    /metrics               `scrape()`: the registry (this process), or, with
                           PROMETHEUS_MULTIPROC_DIR, every process's values aggregated
                           from the directory; the pools' gauges in both cases
    TENANTSERVE_METRICS_PORT  the same exposition on a port of its own (no credentials)

Multiprocess mode: prometheus-client decides when it is imported, from the environment
variable `PROMETHEUS_MULTIPROC_DIR` (an empty directory, wiped before the processes
start); every gateway process writes its counters and histograms there, and a scrape of
any one of them shows the sum. The pools' gauges are those of the process answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

from tenantserve.gateway.auth import check_admin
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.pools import Pool
from tenantserve.observability.config import ObservabilityConfig
from tenantserve.observability.context import current_request
from tenantserve.observability.engine_metrics import PoolCollector
from tenantserve.observability.metrics import GatewayMetrics, TenantLabeler
from tenantserve.observability.tracing import RequestTracer
from tenantserve.scheduling.queue_types import Overloaded, QueueFull
from tenantserve.tenancy.model import TenantContext
from tenantserve.tiers import Tier

if TYPE_CHECKING:
    from tenantserve.gateway.admitted import Admission, Outcome

# ApiError codes of admission refusals -> the `reason` label.
_REASONS = {
    "rate_limit_exceeded": "rate_limited",
    "quota_exceeded": "quota_exceeded",
    "limiter_unavailable": "limiter_unavailable",
}


def rejection_reason(error: BaseException) -> str:
    """The `reason` label of an admission refusal."""
    if isinstance(error, Overloaded):
        return "queue_full" if isinstance(error, QueueFull) else "shed"
    if isinstance(error, ApiError):
        reason = _REASONS.get(error.detail.code or "")
        if reason is not None:
            return reason
        return "denied" if error.status < 500 else "unavailable"
    return "unavailable"


class Telemetry:
    """Metrics and traces of one gateway process."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        tracer: RequestTracer,
        registry: CollectorRegistry,
        pools: PoolCollector | None = None,
        multiproc_dir: Path | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.registry = registry
        self.pools = pools
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        if multiproc_dir is None:
            self.exposition = registry
            if pools is not None:
                registry.register(pools)
        else:  # every process's values from the directory; not this registry's (twice)
            self.exposition = CollectorRegistry()
            MultiProcessCollector(self.exposition, str(multiproc_dir))
            if pools is not None:
                self.exposition.register(pools)
        self._server: Any = None

    @classmethod
    def build(
        cls,
        cfg: ObservabilityConfig,
        pools: Sequence[Pool] = (),
        tracer: RequestTracer | None = None,
        host: str = "127.0.0.1",
    ) -> Telemetry:
        # No `_created` series beside each counter and histogram: a third of the
        # exposition, and nothing the dashboards read.
        disable_created_metrics()
        registry = CollectorRegistry()
        return cls(
            GatewayMetrics(registry, TenantLabeler(cfg.metrics_top_k)),
            tracer if tracer is not None else RequestTracer.to_otlp(cfg.otlp_endpoint),
            registry,
            PoolCollector(pools) if pools else None,
            cfg.multiproc_dir,
            cfg.metrics_port,
            host,
        )

    async def start(self) -> None:
        """Bind the pools' loop; serve the separate metrics port when configured."""
        if self.pools is not None:
            self.pools.bind_loop(asyncio.get_running_loop())
        if self.metrics_port is not None and self._server is None:
            self._server, _ = start_http_server(
                self.metrics_port, self.metrics_host, registry=self.exposition
            )

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.tracer.shutdown()

    async def scrape(self) -> bytes:
        """The Prometheus text exposition, pool gauges fresh (at most `max_age_s` old)."""
        if self.pools is not None:
            await self.pools.refresh()
        return generate_latest(self.exposition)

    # -- the request path ------------------------------------------------------------------

    def finished(self, admission: Admission, outcome: Outcome) -> None:
        """An admitted request ended: its metrics, and its stage spans when tracing."""
        ctx = admission.ctx
        model = admission.decision.route.target
        status = outcome.status.value if outcome.ran else "not_run"
        self.metrics.finished(
            ctx.tenant_id,
            ctx.tier is Tier.PREMIUM,
            model,
            status,
            outcome.prompt_tokens,
            outcome.completion_tokens,
            outcome.cached_tokens,
            outcome.ttft_s,
            time.perf_counter() - admission.started_at,
            admission.grant.queue_time_s,
        )
        if self.tracer.enabled:
            self._stage_spans(admission, outcome, model, status)

    def rejected(
        self, ctx: TenantContext, model: str, error: BaseException, started: float
    ) -> None:
        """A request refused at admission (`started`: its perf_counter() at admission)."""
        reason = rejection_reason(error)
        self.metrics.rejected(ctx.tenant_id, ctx.tier is Tier.PREMIUM, model, reason)
        if not self.tracer.enabled:
            return
        request = current_request()
        if request is None or request.span is None:
            return
        end_ns = time.time_ns()
        start_ns = end_ns - int((time.perf_counter() - started) * 1e9)
        attributes = {"tenantserve.tenant_id": ctx.tenant_id, "tenantserve.rejection": reason}
        self.tracer.stage(
            request.span, "tenantserve.admission", start_ns, end_ns, attributes, reason
        )
        _name_request(request.span, request.operation, model)

    def _stage_spans(self, admission: Admission, outcome: Outcome, model: str, status: str) -> None:
        request = current_request()
        if request is None or request.span is None or request.request_id != admission.request_id:
            return
        span, stage = request.span, self.tracer.stage
        ctx, pool = admission.ctx, admission.pool.name
        attrs = {"tenantserve.tenant_id": ctx.tenant_id, "tenantserve.pool": pool}
        admitted_ns = int(admission.started_wall * 1e9)
        queued_ns = admitted_ns - int(admission.grant.queue_time_s * 1e9)
        started_ns = admitted_ns - int(admission.admission_s * 1e9)
        stage(span, "tenantserve.admission", started_ns, queued_ns, attrs)
        stage(span, "tenantserve.queue", queued_ns, admitted_ns, attrs)
        metered = admission.metering_ns
        end_ns = metered[0] if metered is not None else time.time_ns()
        if outcome.ran:
            error = "error" if outcome.error else None
            first = outcome.first_token_at
            if first is None:
                stage(span, "tenantserve.prefill", admitted_ns, end_ns, attrs, error)
            else:
                first_ns = int(first * 1e9)
                stage(span, "tenantserve.prefill", admitted_ns, first_ns, attrs)
                stage(span, "tenantserve.decode", first_ns, end_ns, attrs, error)
        if metered is not None:
            stage(span, "tenantserve.metering", metered[0], metered[1], attrs)
        span.set_attributes(
            {
                "tenantserve.tenant_id": ctx.tenant_id,
                "tenantserve.tier": ctx.tier.value,
                "tenantserve.pool": pool,
                "tenantserve.adapter": admission.adapter,
                "tenantserve.status": status,
                "gen_ai.usage.input_tokens": outcome.prompt_tokens,
                "gen_ai.usage.output_tokens": outcome.completion_tokens,
            }
        )
        _name_request(span, request.operation, model)


def _name_request(span: Any, operation: str | None, model: str) -> None:
    span.set_attribute("gen_ai.request.model", model)
    if operation is not None:
        span.update_name(f"{operation} {model}")


def metrics_endpoint(
    telemetry: Telemetry, admin_token: str
) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics` on the main port: the exposition, for the admin token only (401)."""
    token = admin_token.encode()

    async def metrics(request: Request) -> Response:
        check_admin(request.headers.get("authorization"), token)
        return Response(await telemetry.scrape(), media_type=CONTENT_TYPE_LATEST)

    return metrics
