"""`RequestTracer`: OpenTelemetry spans of a request's stages; off (no spans, no cost)
unless an OTLP endpoint is configured.

    <operation> <model>          the request (gateway), from the request id on
      ├─ tenantserve.admission   decide, quotas, rate limits (an error when refused)
      ├─ tenantserve.queue       waiting in the pool's fair queue
      ├─ tenantserve.prefill     admitted -> first token (the engine's, or the upstream's)
      ├─ tenantserve.decode      first token -> last
      └─ tenantserve.metering    the usage event written to the outbox

The stages are timed as the request goes and become spans when it ends, with their real
start and end times: nothing is started or ended on the hot path but the request span.
Attributes: OTel gen_ai conventions (`gen_ai.operation.name`, `gen_ai.request.model`,
`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`) and `tenantserve.tenant_id`,
`tenantserve.request_id`, `tenantserve.adapter`, `tenantserve.pool`. Never prompt or
completion text.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

SERVICE_NAME = "tenantserve"

Attributes = Mapping[str, str | int | float | bool]


class RequestTracer:
    """Spans of requests; `enabled` False: every method is a no-op."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self._tracer = provider.get_tracer(SERVICE_NAME) if provider is not None else None

    @classmethod
    def to_otlp(cls, endpoint: str | None) -> RequestTracer:
        """Spans exported over OTLP/HTTP to `endpoint` in batches; None: tracing off."""
        if not endpoint:
            return cls()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls.with_exporter(OTLPSpanExporter(endpoint=endpoint))

    @classmethod
    def with_exporter(cls, exporter: SpanExporter, batch: bool = True) -> RequestTracer:
        """Spans handed to `exporter` (batched, or one by one: tests)."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        return cls(provider)

    def start_request(self, request_id: str, method: str, path: str) -> Span | None:
        """The request's span (ended by the caller); None when tracing is off."""
        if self._tracer is None:
            return None
        return self._tracer.start_span(
            f"{method} {path}",
            kind=SpanKind.SERVER,
            attributes={
                "tenantserve.request_id": request_id,
                "http.request.method": method,
                "url.path": path,
            },
        )

    def stage(
        self,
        parent: Span,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: Attributes | None = None,
        error: str | None = None,
    ) -> None:
        """A finished stage of `parent`'s request, with its own start and end times."""
        if self._tracer is None:
            return
        context = trace.set_span_in_context(parent)
        span = self._tracer.start_span(
            name, context=context, start_time=start_ns, attributes=attributes
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(start_ns, end_ns))

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        if self.provider is not None:
            self.provider.shutdown()
