"""TENANTSERVE_METRICS_PORT: the exposition on a port of its own (served from a thread;
the pools' stats still come from the event loop)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx

from tenantserve.engine.request import EngineRequest, RequestOutput
from tenantserve.gateway.app import EnginePool, ServedModel
from tenantserve.gateway.catalog import SHARED_POOL
from tenantserve.observability.config import ObservabilityConfig
from tenantserve.observability.telemetry import Telemetry


class _Idle:
    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        raise NotImplementedError
        yield

    async def abort(self, request_id: str) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_separate_port_serves_request_and_pool_metrics() -> None:
    pool = EnginePool(SHARED_POOL, _Idle(), ServedModel("m", None, 1024))  # type: ignore[arg-type]
    port = _free_port()
    telemetry = Telemetry.build(ObservabilityConfig(metrics_port=port), [pool])
    telemetry.metrics.finished("acme", True, "m", "completed", 3, 2, 0, 0.1, 0.2, 0.0)
    await telemetry.start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        response = await asyncio.to_thread(httpx.get, url, timeout=10)
    finally:
        telemetry.shutdown()
    assert response.status_code == 200
    assert 'tenantserve_requests_total{model="m",status="completed",tenant="acme"} 1.0' in (
        response.text
    )
    assert 'tenantserve_pool_in_flight{pool="shared"} 0.0' in response.text
