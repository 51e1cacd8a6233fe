"""A rollout on the request path, through a real server: the built-in engine serves the
stable version, an upstream pool (a scripted OpenAI-compatible server) the candidate;
plain-name requests split between them by request id; a candidate that fails is rolled
back automatically and all traffic returns to the stable version."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy, registry_name
from tenantserve.pool_config import PoolConfig
from tests.helpers.server import Running, add_tenant, serve, server_settings
from tests.helpers.upstream import FakeUpstream, running_upstream

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Setup:
    running: Running
    upstream: FakeUpstream
    name: str  # the model's registry name (also its catalog name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    settings = server_settings(tmp_path_factory.mktemp("data"), tiny_model_dir)
    name = registry_name(settings)
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme")
        globex = await add_tenant(tenancy.service, "globex")
    finally:
        await tenancy.db.dispose()
    async with running_upstream("candidate") as upstream:
        pool = PoolConfig("candidate-pool", upstream.url, (f"{name}@1.0.1=upstream-candidate",))
        settings = replace(settings, pools=(pool,))
        async with serve(settings) as (url, service):
            # The candidate: the same weights plus a file, so another digest.
            candidate = tmp_path_factory.mktemp("candidate") / "model"
            shutil.copytree(tiny_model_dir, candidate)
            (candidate / "NOTES.md").write_text("fine-tuned on nothing\n")
            await service.tenancy.registry.register(candidate, name, "1.0.1", status="canary")
            yield Setup(Running(url, service, acme, globex), upstream, name)


async def _chat(setup: Setup, n: int) -> list[int]:
    body = {
        "model": setup.name,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    }
    async with setup.running.http() as http:
        return [(await http.post("/v1/chat/completions", json=body)).status_code for _ in range(n)]


async def test_a_failing_canary_is_rolled_back_and_traffic_returns_to_stable(setup: Setup) -> None:
    async with setup.running.admin() as admin:
        started = await admin.post(
            "/admin/rollouts",
            json={
                "model": setup.name,
                "candidate": f"{setup.name}@1.0.1",
                "shadow_percent": 0,
                "canary_steps": [50, 100],
                "step_seconds": 3600,
                "min_requests": 5,
            },
        )
    assert started.status_code == 201, started.text
    assert started.json()["stable"] == f"{setup.name}@1.0.0"

    # Healthy at first: about half the requests go to the candidate's server.
    assert set(await _chat(setup, 40)) == {200}
    to_candidate = len(setup.upstream.requests)
    assert 8 <= to_candidate <= 32
    assert {r["model"] for r in setup.upstream.requests} == {"upstream-candidate"}

    # The candidate starts failing: its requests are 502s, and the controller rolls back.
    setup.upstream.fail_with = (500, {"detail": "broken"})
    statuses = await _chat(setup, 30)
    assert 502 in statuses and 200 in statuses
    async with setup.running.admin() as admin, asyncio.timeout(30):
        while True:
            rollout = (await admin.get(f"/admin/rollouts/{setup.name}")).json()
            if rollout["phase"] == "rolled_back":
                break
            await asyncio.sleep(0.5)
    assert "error rate" in rollout["history"][-1]["reason"]

    # Everything is served by the stable version again.
    before = len(setup.upstream.requests)
    assert set(await _chat(setup, 20)) == {200}
    assert len(setup.upstream.requests) == before


async def test_shadow_mirrors_finished_requests_to_the_candidate_and_measures_them(
    setup: Setup,
) -> None:
    setup.upstream.fail_with = None
    async with setup.running.admin() as admin:
        started = await admin.post(
            "/admin/rollouts",
            json={
                "model": setup.name,
                "candidate": f"{setup.name}@1.0.1",
                "shadow_percent": 100,
                "canary_steps": [50, 100],
                "step_seconds": 3600,
                "min_requests": 1000,
            },
        )
    assert started.status_code == 201, started.text
    assert started.json()["phase"] == "shadow"

    before = len(setup.upstream.requests)
    body = {
        "model": setup.name,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "temperature": 0,
    }
    async with setup.running.http() as http:
        answers = [await http.post("/v1/chat/completions", json=body) for _ in range(6)]
    # Tenants get the stable version's answers (the engine), never the candidate's.
    assert {a.status_code for a in answers} == {200}
    assert all("upstream" not in a.json()["choices"][0]["message"]["content"] for a in answers)
    async with asyncio.timeout(10):
        while len(setup.upstream.requests) < before + 6:
            await asyncio.sleep(0.05)
    mirrored = setup.upstream.headers[before:]
    ids = {a.headers["x-request-id"] for a in answers}
    assert {h["x-request-id"].removesuffix("-shadow") for h in mirrored} == ids
    assert {r["max_tokens"] for r in setup.upstream.requests[before:]} == {3}
    async with setup.running.admin() as admin:
        rollout = (await admin.get(f"/admin/rollouts/{setup.name}")).json()
        candidate = rollout["stats"]["candidate"]
        assert candidate["requests"] >= 6 and candidate["errors"] == 0
        assert candidate["divergences"] >= 6  # the fake upstream answers other text
        await admin.post(f"/admin/rollouts/{setup.name}/rollback", json={"reason": "test over"})
