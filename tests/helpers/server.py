"""A real tenantserve server for end-to-end tests: uvicorn on a free port, test settings
(known admin token and JWT secret, a small body limit), tenants with keys, clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from tenantserve.bootstrap import Service, build_service, registry_name
from tenantserve.config import AuthConfig, JwtConfig, Settings
from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.config import CacheConfig
from tenantserve.tenancy.model import Tenant
from tenantserve.tenancy.service import TenancyService

ADMIN_TOKEN = "tsadm-test-admin-token"
JWT_SECRET = "a-test-only-hs256-secret-of-at-least-32-bytes"
MAX_BODY_BYTES = 64 << 10


@dataclass(frozen=True)
class TenantKey:
    """A tenant and one of its API keys (the plaintext, as the client holds it)."""

    tenant: Tenant
    key: str
    key_id: str

    @property
    def id(self) -> str:
        return self.tenant.id


async def add_tenant(
    service: TenancyService,
    name: str,
    tier: str = "standard",
    region: str = "us",
    expires_days: float | None = None,
    allowed_models: Iterable[str] = (),
) -> TenantKey:
    """A new tenant with one key."""
    tenant = await service.create_tenant(name, tier, region)
    new = await service.create_key(tenant.id, expires_days, allowed_models)
    return TenantKey(tenant=tenant, key=new.plaintext, key_id=new.key.id)


def server_settings(data_dir: Path, model_dir: Path) -> Settings:
    """Settings of a test server: the tiny model, a small KV cache, known secrets."""
    return Settings(
        data_dir=data_dir,
        model_dir=model_dir,
        cache=replace(CacheConfig(), kv_cache_bytes=16 << 20),
        admin_token=ADMIN_TOKEN,
        max_body_bytes=MAX_BODY_BYTES,
        auth=AuthConfig(jwt=JwtConfig(hs256_secret=JWT_SECRET)),
    )


@dataclass(frozen=True)
class Running:
    url: str
    service: Service
    acme: TenantKey
    globex: TenantKey

    @property
    def model(self) -> str:
        return self.service.model.name

    @property
    def tenancy(self) -> TenancyService:
        return self.service.tenancy.service

    @property
    def engine(self) -> AsyncEngineClient:
        assert isinstance(self.service.engine, AsyncEngineClient)
        return self.service.engine

    def sdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        """The official SDK as a tenant (acme unless another key is given)."""
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=key or self.acme.key, max_retries=0
        )

    def http(self, key: str | None = None, timeout: float = 60) -> httpx.AsyncClient:
        """Raw HTTP as a tenant (acme unless another key is given; "" sends no key)."""
        key = self.acme.key if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def usage_total(self, key: str, requests: int, wait_s: float = 10) -> dict[str, Any]:
        """The caller's `/v1/usage` totals once they count `requests` (metering is
        asynchronous), or as they are after `wait_s`."""
        deadline = time.monotonic() + wait_s
        async with self.http(key=key) as http:
            while True:
                r = await http.get("/v1/usage")
                assert r.status_code == 200, r.text
                total: dict[str, Any] = r.json()["total"]
                if total["requests"] >= requests or time.monotonic() > deadline:
                    return total
                await asyncio.sleep(0.05)

    async def upload_adapter(
        self, name: str, adapter_dir: Path, base_model: str | None = None, key: str | None = None
    ) -> httpx.Response:
        """POST /v1/adapters with the PEFT files in `adapter_dir` (acme unless `key`)."""
        files = {
            n: (n, (adapter_dir / n).read_bytes())
            for n in ("adapter_config.json", "adapter_model.safetensors")
        }
        data = {"name": name} | ({"base_model": base_model} if base_model else {})
        async with self.http(key=key, timeout=300) as http:
            return await http.post("/v1/adapters", data=data, files=files)

    async def ready_adapter(
        self, name: str, model_dir: Path, work_dir: Path, seed: int = 1, key: str | None = None
    ) -> tuple[dict[str, Any], Path]:
        """A small random adapter (rank 4, q/v) of the served base version, written below
        `work_dir` and uploaded (acme unless `key`): its JSON once ready, and its files."""
        from tests.helpers.lora import write_random_adapter  # imports peft and transformers

        files = write_random_adapter(model_dir, work_dir / name, 4, ["q_proj", "v_proj"], seed)
        base = f"{registry_name(self.service.settings)}@1.0.0"
        up = await self.upload_adapter(name, files, base_model=base, key=key)
        assert up.status_code == 201 and up.json()["status"] == "ready", up.text
        return up.json(), files

    def admin(self, token: str = ADMIN_TOKEN) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[str, Service]]:
    """The whole service on 127.0.0.1:<free port>, stopped on exit."""
    service = build_service(settings)
    config = uvicorn.Config(service.app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(120):
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise its error
                pytest.fail("the server stopped during start-up")
            await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        await task
