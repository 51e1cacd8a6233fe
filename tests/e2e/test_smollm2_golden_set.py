"""The shipped golden set on the real SmolLM2-135M-Instruct: attached to the default model
at first start, run through the server's engine pool, every item passed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.bootstrap import Service, registry_name
from tenantserve.registry.default_model import DEFAULT_MODEL_REGISTRY_NAME, default_golden_set
from tests.helpers.server import ADMIN_TOKEN, serve, server_settings

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def real(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Service]]:
    settings = server_settings(tmp_path_factory.mktemp("data"), smollm2_dir)
    assert registry_name(settings) == DEFAULT_MODEL_REGISTRY_NAME
    async with serve(settings) as running:
        yield running


async def test_smollm2_passes_its_shipped_golden_set(real: tuple[str, Service]) -> None:
    import httpx

    url, _ = real
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as admin:
        sets = (await admin.get("/admin/evals/sets")).json()["data"]
        assert [s["name"] for s in sets] == [default_golden_set().name]
        run = (
            await admin.post("/admin/evals/run", json={"model": DEFAULT_MODEL_REGISTRY_NAME})
        ).json()
    (result,) = run["results"]
    failed = [o for o in result["outcomes"] if not o["passed"]]
    assert failed == [], failed
    assert run["passed"] is True and result["score"] == 1.0
