"""A new adapter version rolled out through a real server: version 2 of a tenant's adapter
starts a rollout keyed `adapter:<tenant>/<name>`; requests naming the adapter split between
version 1 and version 2 by request id (the two versions answer differently); promoted to
100% and finished, version 2 is the adapter's current version. Another tenant never
reaches either version."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypeVar

import httpx
import openai
import pytest

from tenantserve.bootstrap import registry_name
from tenantserve.gateway.routes_adapters import AdapterRoutes
from tenantserve.gateway.routes_rollout import RolloutRoutes
from tenantserve.registry.adapter_service import AdapterService
from tenantserve.registry.rollout_live import StepStats
from tenantserve.registry.rollout_service import RolloutService
from tests.helpers.lora import write_random_adapter
from tests.helpers.server import Running

# `running` (conftest.py): a server of its own for this module, acme and globex.
pytestmark = pytest.mark.asyncio(loop_scope="module")

NAME = "sea-bot"
T = TypeVar("T")
PROMPT = [{"role": "user", "content": "Tell me about the sea."}]


def _owner(running: Running, kind: type[T]) -> T:
    """The route handler object of `kind` inside the running app (its services)."""
    for route in running.service.app.routes:
        owner = getattr(getattr(route, "endpoint", None), "__self__", None)
        if isinstance(owner, kind):
            return owner
    raise AssertionError(f"no {kind.__name__} routes installed")


def _files(adapter: Path) -> dict[str, tuple[str, bytes]]:
    return {
        n: (n, (adapter / n).read_bytes())
        for n in ("adapter_config.json", "adapter_model.safetensors")
    }


async def _upload(running: Running, adapter: Path) -> httpx.Response:
    base = f"{registry_name(running.service.settings)}@1.0.0"
    async with running.http() as http:
        return await http.post(
            "/v1/adapters", data={"name": NAME, "base_model": base}, files=_files(adapter)
        )


async def _greedy(running: Running, key: str | None = None) -> tuple[str, str]:
    """(request id, answer) of one greedy request naming the adapter."""
    raw = await running.sdk(key).chat.completions.with_raw_response.create(
        model=NAME,
        messages=PROMPT,
        max_tokens=12,
        temperature=0,  # type: ignore[arg-type]
    )
    return raw.headers["x-request-id"], raw.parse().choices[0].message.content or ""


async def test_a_new_adapter_version_is_canaried_by_request_id_then_becomes_current(
    running: Running, tmp_path: Path
) -> None:
    model_dir = running.service.settings.model_dir
    assert model_dir is not None
    v1_dir = write_random_adapter(model_dir, tmp_path / "v1", 8, "all-linear", seed=3, b_std=1.0)
    v2_dir = write_random_adapter(model_dir, tmp_path / "v2", 8, "all-linear", seed=5, b_std=1.0)
    rollouts = _owner(running, RolloutRoutes).rollouts
    adapters: AdapterService = _owner(running, AdapterRoutes).service
    assert adapters.rollouts is rollouts  # wired by the composition root
    adapters.rollout_options = {"canary_steps": (50.0, 100.0), "shadow_percent": 0.0}
    key = f"adapter:{running.acme.id}/{NAME}"

    first = await _upload(running, v1_dir)
    assert first.status_code == 201 and first.json()["version"] == 1, first.text
    _, v1_answer = await _greedy(running)
    second = await _upload(running, v2_dir)
    assert second.status_code == 201, second.text
    assert (second.json()["version"], second.json()["status"]) == (2, "ready")

    async with running.admin() as admin:
        running_rollouts = (await admin.get("/admin/rollouts")).json()["data"]
    [rollout] = [r for r in running_rollouts if r["model"] == key]
    assert rollout["stable"] == f"{key}@1" and rollout["candidate"] == f"{key}@2"
    assert (rollout["phase"], rollout["percent"]) == ("canary", 50.0)

    # Sticky per request id: each request lands where the rollout routes its id, and the
    # two versions answer differently.
    by_ref: dict[str, set[str]] = {}
    for _ in range(16):
        rid, answer = await _greedy(running)
        by_ref.setdefault(_route(rollouts, key, rid), set()).add(answer)
    assert set(by_ref) == {f"{key}@1", f"{key}@2"}
    assert by_ref[f"{key}@1"] == {v1_answer}
    [v2_answer] = by_ref[f"{key}@2"]
    assert v2_answer != v1_answer
    stats = rollouts.stats(key)
    assert stats is not None and stats.stable.requests + stats.candidate.requests >= 16
    assert stats.candidate.requests > 0 and stats.stable.requests > 0

    # Another tenant cannot name either version.
    with pytest.raises(openai.NotFoundError):
        await _greedy(running, running.globex.key)

    # Through the admin API: the key has a slash (`adapter:<tenant>/<name>`).
    async with running.admin() as admin:
        status = await admin.get(f"/admin/rollouts/{key}")
        assert status.status_code == 200 and status.json()["candidate"] == f"{key}@2"
        assert (await admin.post(f"/admin/rollouts/{key}/promote", json={})).status_code == 200
        done = await admin.post(f"/admin/rollouts/{key}/promote", json={"reason": "finish"})
    assert done.status_code == 200 and done.json()["phase"] == "done", done.text
    async with running.http() as http:
        current = (await http.get(f"/v1/adapters/{NAME}")).json()
    assert current["version"] == 2 and current["id"] == second.json()["id"]
    assert [v["superseded_at"] is not None for v in current["versions"]] == [True, False]
    for _ in range(4):
        assert (await _greedy(running))[1] == v2_answer
    with pytest.raises(openai.NotFoundError):
        await _greedy(running, running.globex.key)
    async with running.http() as http:
        assert (await http.delete(f"/v1/adapters/{NAME}")).status_code == 200


async def _mirrored(rollouts: RolloutService, key: str, requests: int) -> StepStats:
    """The rollout's step stats once the candidate has served `requests` mirrors."""
    async with asyncio.timeout(30):
        while True:
            stats = rollouts.stats(key)
            if stats is not None and stats.candidate.requests >= requests:
                return stats
            await asyncio.sleep(0.05)


def _route(rollouts: RolloutService, key: str, request_id: str) -> str:
    ref = rollouts.route(key, request_id)
    assert ref is not None
    return ref


async def test_a_new_adapter_version_is_shadowed_first_and_only_measured(
    running: Running, tmp_path: Path
) -> None:
    model_dir = running.service.settings.model_dir
    assert model_dir is not None
    v1_dir = write_random_adapter(model_dir, tmp_path / "v1", 8, "all-linear", seed=3, b_std=1.0)
    v2_dir = write_random_adapter(model_dir, tmp_path / "v2", 8, "all-linear", seed=5, b_std=1.0)
    rollouts = _owner(running, RolloutRoutes).rollouts
    adapters: AdapterService = _owner(running, AdapterRoutes).service
    adapters.rollout_options = {"canary_steps": (50.0, 100.0), "shadow_percent": 100.0}
    key = f"adapter:{running.acme.id}/{NAME}"
    assert (await _upload(running, v1_dir)).status_code == 201
    _, v1_answer = await _greedy(running)
    assert (await _upload(running, v2_dir)).json()["version"] == 2
    async with running.admin() as admin:
        rollout = (await admin.get(f"/admin/rollouts/{key}")).json()
    assert rollout["phase"] == "shadow"

    # Tenants get version 1's answers; every request is also run on version 2 and counted.
    # Each mirror is awaited before the next request: more than a few running at once
    # would be dropped (by design), which a slow machine reaches.
    answers = set()
    for n in range(1, 7):
        answers.add((await _greedy(running))[1])
        stats = await _mirrored(rollouts, key, n)
    assert answers == {v1_answer}
    assert stats.candidate.requests >= 6
    assert stats.candidate.errors == 0 and stats.candidate.divergences >= 1
    with pytest.raises(openai.NotFoundError):
        await _greedy(running, running.globex.key)
    async with running.http() as http:
        assert (await http.delete(f"/v1/adapters/{NAME}")).status_code == 200
