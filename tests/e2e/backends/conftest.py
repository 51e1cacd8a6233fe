"""The engine backends behind one suite: the same end-to-end tests run against a gateway
whose model is served by the built-in engine in-process (`builtin`), by the built-in
engine as a Ray Serve deployment (`ray`, a local Ray with 2 CPUs) and by a vLLM server
(`vllm`, marked `vllm`: only in `make test-vllm`).

Each backend's gateway lets one request into the engine at a time (the pool's fair
queue), so what the tests see of scheduling is the gateway's policy, not luck: a premium
request takes the tier's headroom past waiting standard ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy, registry_name
from tenantserve.config import Settings
from tenantserve.engine.config import LoraConfig, SchedulerConfig
from tenantserve.engine_vllm.launcher import VllmLauncher
from tenantserve.gateway.catalog import SHARED_POOL
from tenantserve.gateway.pools import Pool
from tenantserve.pool_config import PoolConfig, VllmConfig
from tenantserve.ray_config import RayConfig
from tests.helpers.ray import local_ray
from tests.helpers.server import Running, TenantKey, add_tenant, serve, server_settings
from tests.helpers.vllm import VLLM_MAX_LORAS, VLLM_MODEL

BACKENDS = ["builtin", "ray", pytest.param("vllm", marks=pytest.mark.vllm)]


@dataclass(frozen=True)
class Backend:
    """A running gateway in front of one backend, and what the suite needs to know of it."""

    name: str
    running: Running
    model: str  # what tenants call the backend's base model
    base_ref: str  # the registry version adapters are uploaded for
    model_dir: Path  # that version's checkpoint (adapters are shaped for it)
    premium: TenantKey
    pool_name: str  # the pool serving `model`

    @property
    def pool(self) -> Pool:
        return next(p for p in self.running.service.pools if p.name == self.pool_name)


async def _start(
    name: str, settings: Settings, model: str, model_dir: Path, pool: str
) -> AsyncIterator[Backend]:
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme")
        globex = await add_tenant(tenancy.service, "globex")
        premium = await add_tenant(tenancy.service, "vip", tier="premium")
    finally:
        await tenancy.db.dispose()
    base_ref = f"{registry_name(settings)}@1.0.0"
    async with serve(settings) as (url, service):
        running = Running(url=url, service=service, acme=acme, globex=globex)
        model = model or running.model
        yield Backend(name, running, model, base_ref, model_dir, premium, pool)


@pytest.fixture(scope="module", params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test; vLLM's server is started here (a session fixture, which
    an async fixture cannot start on demand from inside the running loop)."""
    if request.param == "vllm":
        request.getfixturevalue("vllm_server")
    return str(request.param)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def backend(
    backend_name: str,
    request: pytest.FixtureRequest,
    tiny_model_dir: Path,
    smollm2_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Backend]:
    name = backend_name
    data = tmp_path_factory.mktemp(f"data-{name}")
    one_at_a_time = SchedulerConfig(max_num_seqs=1)
    if name == "builtin":
        settings = replace(server_settings(data, tiny_model_dir), scheduler=one_at_a_time)
        async for b in _start(name, settings, "", tiny_model_dir, SHARED_POOL):
            yield b
    elif name == "ray":
        settings = replace(
            server_settings(data, tiny_model_dir),
            scheduler=one_at_a_time,
            engine_backend="ray",
            ray=RayConfig(min_replicas=1, max_replicas=1, replica_num_cpus=0.5),
            engine_threads=1,
            lora=LoraConfig(max_loras=2),
        )
        with local_ray():
            async for b in _start(name, settings, "", tiny_model_dir, SHARED_POOL):
                yield b
    else:
        vllm: VllmLauncher = request.getfixturevalue("vllm_server")
        # The built-in engine serves SmolLM2 too, for the smoke test of uploaded adapters;
        # tenants' requests for the registry version go to the vLLM pool.
        settings = server_settings(data, smollm2_dir)
        ref = f"{registry_name(settings)}@1.0.0"
        pool = PoolConfig(
            name="vllm",
            kind="vllm",
            base_url=vllm.base_url,
            models=(VLLM_MODEL, f"{ref}={VLLM_MODEL}"),
            max_model_len=2048,
            max_in_flight=1,
            vllm=VllmConfig(max_loras=VLLM_MAX_LORAS),
        )
        settings = replace(settings, pools=(pool,))
        async for b in _start(name, settings, VLLM_MODEL, smollm2_dir, pool.name):
            yield b
