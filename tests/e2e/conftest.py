"""A real server per test module: uvicorn on a free port, the tiny model, a fresh data dir
with two tenants (acme and globex, standard tier, region us) and their API keys.

Tests marked `vllm` need a real vLLM server (`vllm_server`, once per session): they are
collected only with TENANTSERVE_VLLM=1 (`make test-vllm`) and deselected elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy
from tenantserve.engine_vllm.launcher import VllmLauncher
from tests.helpers.server import Running, add_tenant, serve, server_settings
from tests.helpers.vllm import running_vllm, vllm_enabled


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside `make test-vllm` (TENANTSERVE_VLLM=1) the `vllm` tests are deselected."""
    if vllm_enabled():
        return
    vllm = [i for i in items if i.get_closest_marker("vllm") is not None]
    if vllm:
        config.hook.pytest_deselected(items=vllm)
        items[:] = [i for i in items if i.get_closest_marker("vllm") is None]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_server(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[VllmLauncher]:
    """One vLLM server on SmolLM2 for the session (about a minute on 2 CPU cores)."""
    async with running_vllm(smollm2_dir, tmp_path_factory.mktemp("vllm") / "vllm.log") as v:
        yield v


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    settings = server_settings(tmp_path_factory.mktemp("data"), tiny_model_dir)
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme")
        globex = await add_tenant(tenancy.service, "globex")
    finally:
        await tenancy.db.dispose()
    async with serve(settings) as (url, service):
        yield Running(url=url, service=service, acme=acme, globex=globex)
