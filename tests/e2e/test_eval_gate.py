"""The eval gate on a real server: the stable version (the built-in engine, a tiny model)
passes a golden set, the canary candidate (an upstream pool that always answers "Hello
from the upstream.") fails it; the run raises `eval_regression`, the rollout cannot be
promoted to 100%. A tenant's adapter eval set is private to it and fails an upload that
does not reach its min_score."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy, registry_name
from tenantserve.pool_config import PoolConfig
from tests.helpers.lora import set_adapter_config, write_random_adapter
from tests.helpers.server import Running, add_tenant, serve, server_settings
from tests.helpers.upstream import running_upstream

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Whatever the tiny random model says, it does not say "upstream"; the upstream does.
GOLDEN = {
    "name": "not-the-upstream",
    "items": [
        {
            "id": f"q{i}",
            "prompt": f"Question {i}?",
            "rule": {"type": "regex", "pattern": "^(?![\\s\\S]*upstream)"},
            "max_tokens": 4,
        }
        for i in range(4)
    ],
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
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
        async with serve(replace(settings, pools=(pool,))) as (url, service):
            candidate = tmp_path_factory.mktemp("candidate") / "model"
            shutil.copytree(tiny_model_dir, candidate)
            (candidate / "NOTES.md").write_text("worse at everything\n")
            await service.tenancy.registry.register(candidate, name, "1.0.1", status="canary")
            yield Running(url, service, acme, globex)


async def test_a_regressed_canary_cannot_be_promoted_and_operators_are_alerted(
    running: Running,
) -> None:
    name = registry_name(running.service.settings)
    async with running.admin() as admin:
        put = await admin.post("/admin/evals/sets", json={"model": name, "set": GOLDEN})
        assert put.status_code == 201, put.text
        started = await admin.post(
            "/admin/rollouts",
            json={
                "model": name,
                "candidate": f"{name}@1.0.1",
                "shadow_percent": 0,
                "canary_steps": [50, 100],
                "step_seconds": 3600,
            },
        )
        assert started.status_code == 201, started.text

        stable = (await admin.post("/admin/evals/run", json={"model": name})).json()
        assert (stable["ref"], stable["passed"]) == (f"{name}@1.0.0", True), stable
        assert stable["results"][0]["score"] == 1.0
        run = (await admin.post("/admin/evals/run", json={"model": f"{name}@1.0.1"})).json()
        assert run["passed"] is False and run["results"][0]["score"] == 0.0
        assert "Hello from the upstream" in run["results"][0]["outcomes"][0]["output"]

        events = (await admin.get("/admin/events")).json()["data"]
        regression = [e for e in events if e["kind"] == "eval_regression"]
        assert regression and regression[-1]["details"]["ref"] == f"{name}@1.0.1"

        promoted = await admin.post(f"/admin/rollouts/{name}/promote", json={})
        assert promoted.status_code == 400
        assert "eval regression" in promoted.json()["error"]["message"]
        status = (await admin.get(f"/admin/rollouts/{name}")).json()
        assert status["percent"] == 50

        results = (await admin.get("/admin/evals/results", params={"model": name})).json()
        # The rollout's tick may also have evaluated the candidate in the background
        # (its verdict was missing): one more failed result of 1.0.1, never of 1.0.0.
        refs = [r["ref"] for r in results["data"]]
        assert refs[0] == f"{name}@1.0.1" and refs.count(f"{name}@1.0.0") == 1, refs
        assert set(refs) == {f"{name}@1.0.1", f"{name}@1.0.0"}, refs
        assert all(r["score"] == (r["ref"] == f"{name}@1.0.0") for r in results["data"])
        await admin.post(f"/admin/rollouts/{name}/rollback", json={})


async def test_a_tenants_adapter_eval_set_is_404_for_another_tenant(running: Running) -> None:
    path = "/v1/adapters/support-bot/eval-set"
    async with running.http() as acme, running.http(running.globex.key) as globex:
        put = await acme.post(path, json=GOLDEN)
        assert put.status_code == 201, put.text
        assert put.json()["result"] is None  # no version uploaded yet
        assert (await acme.get(path)).json()["eval_set"]["num_items"] == 4
        assert (await globex.get(path)).status_code == 404
        assert (await globex.delete(path)).status_code == 404
        bad = await acme.post(path, json={"name": "x", "items": []})
        assert bad.status_code == 400 and "`items`" in bad.json()["error"]["message"]
        assert (await acme.delete(path)).status_code == 200
        assert (await acme.get(path)).status_code == 404


async def test_an_upload_failing_the_tenants_eval_set_is_failed_with_the_eval_report(
    running: Running, tiny_model_dir: Path, tmp_path: Path
) -> None:
    name = registry_name(running.service.settings)
    adapter_dir = write_random_adapter(tiny_model_dir, tmp_path / "a", 4, ["q_proj", "v_proj"], 3)
    set_adapter_config(adapter_dir, base_model_name_or_path=name)
    files = {
        f: (f, (adapter_dir / f).read_bytes())
        for f in ("adapter_config.json", "adapter_model.safetensors")
    }
    never = {"type": "contains", "any": ["zzqq-never-said"]}
    strict = {"name": "strict", "items": [{"prompt": "Hi?", "rule": never, "max_tokens": 4}]}
    anything = {**strict, "name": "anything"}
    anything["items"] = [{"prompt": "Hi?", "rule": {"type": "regex", "pattern": ".?"}}]
    async with running.http() as acme:
        assert (await acme.post("/v1/adapters/strict-bot/eval-set", json=strict)).is_success
        assert (await acme.post("/v1/adapters/easy-bot/eval-set", json=anything)).is_success
        failed = await acme.post("/v1/adapters", data={"name": "strict-bot"}, files=files)
        ready = await acme.post("/v1/adapters", data={"name": "easy-bot"}, files=files)
        history = (await acme.get("/v1/adapters/strict-bot/eval-set")).json()["results"]
    assert failed.status_code == 201 and failed.json()["status"] == "failed", failed.text
    assert "tenant eval strict: 0/1 passed" in failed.json()["report"]
    assert ready.json()["status"] == "ready", ready.text
    assert ready.json()["report"] == "tenant eval anything: 1/1 passed (score 1.00)"
    assert [r["score"] for r in history] == [0.0]
