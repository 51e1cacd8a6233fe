"""`GET /admin/pools` on a real server: the built-in engine's pool with its one replica's
live stats (load, KV cache, adapters) after traffic, and only for the admin token — a
missing or wrong token and a tenant's API key get OpenAI's 401."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers.server import Running

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _pools(running: Running) -> list[dict[str, Any]]:
    async with running.admin() as admin:
        r = await admin.get("/admin/pools")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    return list(body["data"])


async def test_the_engine_pool_reports_its_replica_after_traffic(running: Running) -> None:
    reply = await running.sdk().chat.completions.create(
        model=running.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    [pool] = await _pools(running)
    assert pool["kind"] == "engine" and pool["models"] == [running.model]
    assert pool["region"] == "us" and pool["reserved_for"] == []
    queue = pool["queue"]
    assert queue["in_flight"] == 0
    assert set(queue["waiting"]) == {"free", "standard", "premium"}
    [replica] = pool["replicas"]
    assert replica["id"] == f"{pool['name']}/0" and replica["backend"] == "engine"
    assert replica["up"] is True and replica["restarts"] == 0
    assert replica["running"] == 0 and replica["waiting"] == 0
    kv = replica["kv_cache"]
    assert kv["blocks"] > 0
    assert kv["used_blocks"] + kv["cached_blocks"] + kv["free_blocks"] == kv["blocks"]
    assert kv["cached_blocks"] > 0  # the finished prompt's blocks stay cached
    assert 0.0 <= kv["usage"] <= 1.0
    adapters = replica["adapters"]
    assert set(adapters) == {"active", "pinned", "host", "loading", "failed", "hot"}
    assert adapters["hot"] == [] and adapters["active"] == 0  # no adapter was asked for


async def test_an_adapter_in_use_is_listed_hot_on_its_replica(
    running: Running, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter, _ = await running.ready_adapter("pools-bot", tiny_model_dir, tmp_path, seed=2)
    await running.sdk().chat.completions.create(
        model="pools-bot", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    [pool] = await _pools(running)
    [replica] = pool["replicas"]
    assert replica["adapters"]["active"] >= 1
    assert adapter["id"] in replica["adapters"]["hot"]


@pytest.mark.parametrize("credential", ["", "tsadm-wrong", "acme-key"])
async def test_only_the_admin_token_reads_the_pools(running: Running, credential: str) -> None:
    key = running.acme.key if credential == "acme-key" else credential
    async with running.http(key) as http:
        r = await http.get("/admin/pools")
    assert r.status_code == 401
    error = r.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == "invalid_api_key" and error["message"]
