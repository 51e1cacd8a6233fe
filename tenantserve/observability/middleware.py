"""`TelemetryMiddleware` (pure ASGI, just inside `RequestIdMiddleware`): binds the
request's `RequestContext` (request id; the tenant once authenticated) for logs and
spans, and, when tracing, runs the request span around the rest of the app."""

from __future__ import annotations

from opentelemetry.trace import Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantserve.observability.context import RequestContext, bind_request, unbind_request
from tenantserve.observability.tracing import RequestTracer

# gen_ai.operation.name of the routes that run a model.
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion"}


class TelemetryMiddleware:
    """The request context for every HTTP request; its span when tracing is on."""

    def __init__(self, app: ASGIApp, tracer: RequestTracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(scope.get("state", {}).get("request_id", ""))
        token = bind_request(context)
        try:
            if not self.tracer.enabled:
                await self.app(scope, receive, send)
            else:
                await self._traced(context, scope, receive, send)
        finally:
            unbind_request(token)

    async def _traced(
        self, context: RequestContext, scope: Scope, receive: Receive, send: Send
    ) -> None:
        path = scope.get("path", "")
        span = self.tracer.start_request(context.request_id, scope["method"], path)
        assert span is not None
        context.span = span
        context.operation = OPERATIONS.get(path)
        if context.operation is not None:
            span.set_attribute("gen_ai.operation.name", context.operation)
            span.set_attribute("gen_ai.provider.name", "tenantserve")
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as e:
            span.record_exception(e)
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
