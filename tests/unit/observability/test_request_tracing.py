"""One request through a real app (a fake engine behind it): the request span and a
child span per stage, with the gen_ai and tenantserve attributes; no content."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tenantserve.admission import LocalRateLimiter
from tenantserve.bootstrap import open_tenancy
from tenantserve.engine.request import (
    EngineRequest,
    FinishReason,
    RequestMetrics,
    RequestOutput,
)
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.gateway.app import EnginePool, Gateway, ServedModel, create_app
from tenantserve.gateway.catalog import SHARED_POOL
from tenantserve.metering.events import UsageEvent
from tenantserve.observability.config import ObservabilityConfig
from tenantserve.observability.telemetry import Telemetry
from tenantserve.observability.tracing import RequestTracer
from tests.helpers.server import ADMIN_TOKEN, add_tenant, server_settings

PROMPT = "tell me the secret word 7731"


class _Engine:
    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        rid = request.request_id
        time.sleep(0.002)  # prefill
        yield RequestOutput(rid, (100,), "hello")
        time.sleep(0.002)  # decode
        metrics = RequestMetrics(len(request.prompt_token_ids), 0, 2, 0.0, 0.002, 0.004, 0)
        yield RequestOutput(rid, (101,), " there", True, FinishReason.LENGTH, metrics=metrics)

    async def abort(self, request_id: str) -> None:
        pass


class _Meter:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    async def record(self, event: UsageEvent) -> bool:
        self.events.append(event)
        return True


async def test_a_request_has_a_span_per_stage_under_its_request_span(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    tracer = RequestTracer.with_exporter(exporter, batch=False)
    model = ServedModel("fake", Tokenizer(tiny_model_dir), max_context_tokens=1024)
    pool = EnginePool(SHARED_POOL, _Engine(), model)
    telemetry = Telemetry.build(ObservabilityConfig(), [pool], tracer=tracer)
    tenancy = await open_tenancy(server_settings(tmp_path, tiny_model_dir))
    try:
        tenant = await add_tenant(tenancy.service, "acme")
        gateway = Gateway(
            pools=[pool],
            tenancy=tenancy.service,
            limiter=LocalRateLimiter(),
            admin_token=ADMIN_TOKEN,
            meter=_Meter(),  # type: ignore[arg-type]
            telemetry=telemetry,
        )
        transport = httpx.ASGITransport(app=create_app(gateway))
        headers = {"Authorization": f"Bearer {tenant.key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            body = {"model": "fake", "messages": [{"role": "user", "content": PROMPT}]}
            response = await http.post("/v1/chat/completions", json=body)
    finally:
        await tenancy.db.dispose()
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]

    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["chat fake@1"] if "chat fake@1" in spans else spans["chat fake"]
    assert root.parent is None
    attrs = dict(root.attributes or {})
    assert attrs["tenantserve.request_id"] == request_id
    assert attrs["tenantserve.tenant_id"] == tenant.id
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] in ("fake", "fake@1")
    assert attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["tenantserve.adapter"] == ""
    assert attrs["http.response.status_code"] == 200

    stages = ["admission", "queue", "prefill", "decode", "metering"]
    children = [spans[f"tenantserve.{s}"] for s in stages]
    for child in children:
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert (child.attributes or {})["tenantserve.tenant_id"] == tenant.id
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    admission, queue, prefill, decode, metering = children
    assert admission.end_time <= queue.start_time + 1000
    assert prefill.end_time == decode.start_time
    assert decode.end_time <= metering.start_time
    for span in exporter.get_finished_spans():
        assert PROMPT not in str(dict(span.attributes or {}))


async def test_a_refused_request_has_an_admission_span_with_the_reason(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    tracer = RequestTracer.with_exporter(exporter, batch=False)
    model = ServedModel("fake", Tokenizer(tiny_model_dir), max_context_tokens=1024)
    pool = EnginePool(SHARED_POOL, _Engine(), model)
    telemetry = Telemetry.build(ObservabilityConfig(), [pool], tracer=tracer)
    tenancy = await open_tenancy(server_settings(tmp_path, tiny_model_dir))
    try:
        tenant = await add_tenant(tenancy.service, "acme")
        gateway = Gateway(
            pools=[pool],
            tenancy=tenancy.service,
            limiter=LocalRateLimiter(),
            admin_token=ADMIN_TOKEN,
            telemetry=telemetry,
        )
        transport = httpx.ASGITransport(app=create_app(gateway))
        headers = {"Authorization": f"Bearer {tenant.key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            body = {"model": "nope", "prompt": "hi"}
            response = await http.post("/v1/completions", json=body)
    finally:
        await tenancy.db.dispose()
    assert response.status_code == 404
    spans = {s.name: s for s in exporter.get_finished_spans()}
    admission = spans["tenantserve.admission"]
    assert (admission.attributes or {})["tenantserve.rejection"] == "denied"
    assert not admission.status.is_ok
    root = spans["text_completion unknown"]
    assert admission.parent is not None and admission.parent.span_id == root.context.span_id
