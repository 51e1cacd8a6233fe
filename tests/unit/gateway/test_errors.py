"""OpenAI-shaped errors for what FastAPI refuses before a route runs."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tenantserve.gateway.errors import install_error_handlers


async def test_a_query_parameter_fastapi_refuses_is_an_openai_400() -> None:
    app = FastAPI()

    async def page(limit: int) -> dict[str, int]:
        return {"limit": limit}

    app.add_api_route("/page", page, methods=["GET"])
    install_error_handlers(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        missing = await http.get("/page")
        wrong = await http.get("/page", params={"limit": "many"})
    for r in (missing, wrong):
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "limit"
        assert r.json()["error"]["type"] == "invalid_request_error"
