"""Pure ASGI middleware of the gateway (no BaseHTTPMiddleware: nothing buffers a stream).

RequestIdMiddleware   outermost: a fresh `req_<32 hex>` per request, in the scope for the
                      routes (`request_id(request)`) and in every response's
                      `x-request-id` header, errors included
BodyLimitMiddleware   refuses a body above the limit with 413: at once from its
                      Content-Length, or as soon as the streamed body crosses it; and
                      one that has not fully arrived within the body timeout with 408
                      (a client trickling its body in holds no handler for long)
"""

from __future__ import annotations

import asyncio
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
    limit of the longest matching path prefix in `path_limits` (adapter uploads); 408 for
    one still incomplete `body_timeout_s` after the request started (None: no timeout),
    or the timeout of the longest matching prefix in `path_timeouts`."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        path_limits: Mapping[str, int] | None = None,
        body_timeout_s: float | None = None,
        path_timeouts: Mapping[str, float] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = sorted((path_limits or {}).items(), key=lambda kv: -len(kv[0]))
        self.body_timeout_s = body_timeout_s
        self.path_timeouts = sorted((path_timeouts or {}).items(), key=lambda kv: -len(kv[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = next((n for p, n in self.path_limits if path.startswith(p)), self.max_body_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit).response()(scope, receive, send)
            return
        timeout_s = next((t for p, t in self.path_timeouts if path.startswith(p)), None)
        timeout_s = self.body_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s

        received = 0
        body_done = False
        started = False
        refused: ApiError | None = None

        async def limited_receive() -> Message:
            nonlocal received, refused, body_done
            if body_done or deadline is None:
                message = await receive()  # the body is in: waiting for a disconnect
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    refused = _too_slow(timeout_s or 0.0)
                    raise refused from None  # the route's error handler answers 408
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    refused = _too_large(limit)
                    raise refused  # the route's error handler answers 413
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ApiError as e:
            if refused is None or e is not refused or started:
                raise
            await refused.response()(scope, receive, send)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than the limit of {limit} bytes.",
        code="request_too_large",
    )


def _too_slow(timeout_s: float) -> ApiError:
    return ApiError(
        408,
        f"The request body did not arrive within {timeout_s:g} s.",
        code="request_timeout",
        headers={"Connection": "close"},  # the rest of the body is not awaited
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
