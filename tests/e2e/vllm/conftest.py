"""One real vLLM server (CPU build, its own venv) per test session, started by
tenantserve's `VllmLauncher` on SmolLM2-135M, and a tenantserve server in front of it
with two `kind = "vllm"` pools: `smol-vllm` (that server; it also serves the registry
version of SmolLM2, so tenants' adapters run there) and `captured` (a recording fake
upstream: what the gateway sends a vLLM server, cache_salt and priority included).

Marked `vllm`: collected only with TENANTSERVE_VLLM=1 (`make test-vllm`); the vLLM server
is the session's `vllm_server` (tests/e2e/conftest.py). The backend-neutral suite that
also runs against it is tests/e2e/backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy, registry_name
from tenantserve.engine_vllm.launcher import VllmLauncher
from tenantserve.pool_config import PoolConfig, VllmConfig
from tests.helpers.server import Running, TenantKey, add_tenant, serve, server_settings
from tests.helpers.upstream import FakeUpstream, running_upstream
from tests.helpers.vllm import VLLM_MODEL

CAPTURED_MODEL = "captured"


@dataclass(frozen=True)
class VllmRunning:
    """The gateway (`running`), the vLLM server behind it, a recording fake vLLM."""

    running: Running
    vllm: VllmLauncher
    captured: FakeUpstream
    free: TenantKey
    premium: TenantKey

    @property
    def vllm_root(self) -> str:
        return self.vllm.base_url.removesuffix("/v1")

    @property
    def registry_ref(self) -> str:
        return f"{registry_name(self.running.service.settings)}@1.0.0"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_running(
    vllm_server: VllmLauncher, smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[VllmRunning]:
    """tenantserve in front of the vLLM server (built-in engine on the same SmolLM2: it
    smoke-tests uploaded adapters), acme / globex standard, a free and a premium tenant."""
    settings = server_settings(tmp_path_factory.mktemp("data"), smollm2_dir)
    ref = f"{registry_name(settings)}@1.0.0"
    async with running_upstream("captured") as captured:
        pools = (
            PoolConfig(
                name="vllm",
                kind="vllm",
                base_url=vllm_server.base_url,
                models=(VLLM_MODEL, f"{ref}={VLLM_MODEL}"),
                max_model_len=2048,
                vllm=VllmConfig(max_loras=2),
            ),
            PoolConfig(
                name="vllm-captured",
                kind="vllm",
                base_url=captured.url,
                models=(CAPTURED_MODEL,),
                vllm=VllmConfig(cache_salt_secret="a-test-salt-secret"),
            ),
        )
        settings = replace(settings, pools=pools)
        tenancy = await open_tenancy(settings)
        try:
            acme = await add_tenant(tenancy.service, "acme")
            globex = await add_tenant(tenancy.service, "globex")
            free = await add_tenant(tenancy.service, "cheap", tier="free")
            premium = await add_tenant(tenancy.service, "vip", tier="premium")
        finally:
            await tenancy.db.dispose()
        async with serve(settings) as (url, service):
            running = Running(url=url, service=service, acme=acme, globex=globex)
            yield VllmRunning(running, vllm_server, captured, free, premium)
