"""`RequestContext`: the request id and tenant id of the request being served, in a
contextvar, so that every log line and span written while serving it carries them.

`RequestContext` is mutable on purpose: the middleware binds it before the tenant is
known; authentication fills `tenant_id` in, and tasks that copied the context earlier
(a stream's sender) see it too.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestContext:
    """Who a request is, for logs and spans (never what it says)."""

    request_id: str
    tenant_id: str | None = None
    # The request's OTel span (None: tracing is off) and its gen_ai operation name.
    span: Any = None
    operation: str | None = None


_current: ContextVar[RequestContext | None] = ContextVar("tenantserve_request", default=None)


def current_request() -> RequestContext | None:
    """The context of the request being served here; None outside a request."""
    return _current.get()


def bind_request(context: RequestContext) -> Token[RequestContext | None]:
    """Make `context` current; give the token to `unbind_request` when the request ends."""
    return _current.set(context)


def unbind_request(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def bind_tenant(tenant_id: str) -> None:
    """Record the authenticated tenant on the current request (no-op outside one)."""
    context = _current.get()
    if context is not None:
        context.tenant_id = tenant_id
        if context.span is not None:
            context.span.set_attribute("tenantserve.tenant_id", tenant_id)
