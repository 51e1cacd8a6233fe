"""What observability adds to one request on the gateway's hot path: the metric updates
of a finished request (a labeled tenant, and one folded into `other`), the telemetry
middleware (tracing off and on), measured in process with `timeit`.

    .venv/bin/python bench/metrics_overhead.py
"""

from __future__ import annotations

import asyncio
import random
import timeit

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from tenantserve.observability.metrics import GatewayMetrics, TenantLabeler
from tenantserve.observability.middleware import TelemetryMiddleware
from tenantserve.observability.tracing import RequestTracer

N = 200_000


class _Discard(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _us(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:.2f} µs"


def metric_updates() -> None:
    metrics = GatewayMetrics(CollectorRegistry(), TenantLabeler(top_k=20))
    metrics.finished("top", False, "m", "completed", 100, 20, 50, 0.1, 0.5, 0.001)
    others = [f"ten_{random.getrandbits(64):016x}" for _ in range(10_000)]
    for t in [f"seat-{i}" for i in range(20)]:
        metrics.finished(t, False, "m", "completed", 1, 1, 0, 0.1, 0.5, 0.0)

    def labeled() -> None:
        metrics.finished("top", False, "m", "completed", 100, 20, 50, 0.1, 0.5, 0.001)

    it = iter(others * (N // len(others) + 1))

    def folded() -> None:
        metrics.finished(next(it), False, "m", "completed", 100, 20, 50, 0.1, 0.5, 0.001)

    print("metrics.finished, labeled tenant:", _us(timeit.timeit(labeled, number=N), N))
    print("metrics.finished, folded (other):", _us(timeit.timeit(folded, number=N), N))


async def _middleware() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "state": {}}
    scope["state"]["request_id"] = "req_0"  # type: ignore[index]
    off = TelemetryMiddleware(app, RequestTracer())
    on = TelemetryMiddleware(app, RequestTracer.with_exporter(_Discard()))
    n = N // 4
    for name, layer in (("none", app), ("tracing off", off), ("tracing on", on)):
        start = asyncio.get_running_loop().time()
        for _ in range(n):
            await layer(scope, None, None)
        elapsed = asyncio.get_running_loop().time() - start
        print(f"middleware pass, {name}:", _us(elapsed, n))


def stage_spans() -> None:
    tracer = RequestTracer.with_exporter(_Discard())
    root = tracer.start_request("req_0", "POST", "/v1/chat/completions")
    assert root is not None
    n = N // 20

    def five() -> None:
        for name in ("a", "q", "p", "d", "m"):
            tracer.stage(root, name, 1, 2, {"tenantserve.tenant_id": "t"})

    print("five stage spans (tracing on):", _us(timeit.timeit(five, number=n), n))
    tracer.shutdown()


if __name__ == "__main__":
    metric_updates()
    asyncio.run(_middleware())
    stage_spans()
