"""A real server per test module: uvicorn on a free port, the tiny model, a fresh data dir
with two tenants (acme and globex, standard tier, region us) and their API keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy
from tests.helpers.server import Running, add_tenant, serve, server_settings


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
