"""Pure ASGI middleware: request ids on every response, the body limit on declared and
streamed bodies."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request

from tenantserve.gateway.errors import install_error_handlers
from tenantserve.gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware, request_id

LIMIT = 100


def _client() -> httpx.AsyncClient:
    app = FastAPI()

    async def echo(request: Request) -> dict[str, object]:
        return {"size": len(await request.body()), "id": request_id(request)}

    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/echo", echo, methods=["POST"])
    app.add_api_route("/boom", boom, methods=["GET"])
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=LIMIT)
    app.add_middleware(RequestIdMiddleware)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_every_response_has_a_fresh_request_id_the_route_also_sees() -> None:
    async with _client() as http:
        ok = await http.post("/echo", content=b"x" * LIMIT)
        missing = await http.get("/nowhere")
        failed = await http.get("/boom")
    assert ok.json() == {"size": LIMIT, "id": ok.headers["x-request-id"]}
    ids = [r.headers["x-request-id"] for r in (ok, missing, failed)]
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 3
    assert (missing.status_code, failed.status_code) == (404, 500)


async def test_a_body_over_the_limit_is_a_413_declared_or_streamed() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 30

    async with _client() as http:
        declared = await http.post("/echo", content=b"x" * (LIMIT + 1))
        streamed = await http.post("/echo", content=chunks())
    for r in (declared, streamed):
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        assert r.headers["x-request-id"].startswith("req_")


async def test_a_body_that_does_not_arrive_in_time_is_a_408_and_closes_the_connection() -> None:
    app = FastAPI()

    async def echo(request: Request) -> dict[str, object]:
        return {"size": len(await request.body())}

    app.add_api_route("/echo", echo, methods=["POST"])
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=LIMIT, body_timeout_s=0.2)
    transport = httpx.ASGITransport(app=app)

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x"
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        slow = await http.post("/echo", content=trickle())
        fast = await http.post("/echo", content=b"x" * 10)
    assert slow.status_code == 408
    assert slow.json()["error"]["code"] == "request_timeout"
    assert slow.headers["connection"] == "close"
    assert fast.json() == {"size": 10}
