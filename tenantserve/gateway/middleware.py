"""Pure ASGI middleware of the gateway (no BaseHTTPMiddleware: nothing buffers a stream).

RequestIdMiddleware   outermost: a fresh `req_<32 hex>` per request, in the scope for the
                      routes (`request_id(request)`) and in every response's
                      `x-request-id` header, errors included
BodyLimitMiddleware   refuses a body above the limit with 413: at once from its
                      Content-Length, or as soon as the streamed body crosses it
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantserve.gateway.errors import REQUEST_ID_HEADER, ApiError

REQUEST_ID_PREFIX = "req_"
_ids = random.Random()  # seeded from os.urandom; again in a forked child (its own ids)
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """A server-generated request id, `req_<32 hex>`: 128 random bits, from a generator
    seeded from the OS per process (an id names a request; it is no secret, so it need
    not cost `uuid4`'s system call per request)."""
    return f"{REQUEST_ID_PREFIX}{_ids.getrandbits(128):032x}"


def request_id(request: Request) -> str:
    """The id `RequestIdMiddleware` gave this request."""
    rid = request.scope.get("state", {}).get("request_id")
    if not isinstance(rid, str):
        raise RuntimeError("RequestIdMiddleware is not installed")
    return rid


class RequestIdMiddleware:
    """Gives every HTTP request an id (`scope["state"]["request_id"]`) and returns it as the
    `x-request-id` header of whatever response leaves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        # In place, so that layers outside this one (Starlette's error handler) see it too.
        scope.setdefault("state", {})["request_id"] = rid
        header = (REQUEST_ID_HEADER.encode(), rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """413 in OpenAI's shape for a request body larger than `max_body_bytes`, or than the
    limit of the longest matching path prefix in `path_limits` (adapter uploads)."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = sorted((path_limits or {}).items(), key=lambda kv: -len(kv[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        if self.path_limits:
            path = scope.get("path", "")
            limit = next((n for p, n in self.path_limits if path.startswith(p)), limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit).response()(scope, receive, send)
            return

        received = 0
        started = False
        too_large: ApiError | None = None

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = _too_large(limit)
                    raise too_large  # the route's error handler answers 413
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ApiError as e:
            if too_large is None or e is not too_large or started:
                raise
            await too_large.response()(scope, receive, send)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than the limit of {limit} bytes.",
        code="request_too_large",
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
