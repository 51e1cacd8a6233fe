"""The registry on the request path, through a real server and the official SDK: the
engine's model is registered at start; a pinned version is served (deprecated: with
Deprecation / Sunset / Warning headers; archived: 404 naming the replacement); a tenant's
uploaded adapter is addressable as `model`, changes the output, is listed in /v1/models,
and does not exist for any other tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from tenantserve.bootstrap import registry_name
from tests.helpers.lora import write_random_adapter
from tests.helpers.server import Running

# `running` (conftest.py): a server of its own for this module, acme and globex.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _ref(running: Running) -> str:
    return f"{registry_name(running.service.settings)}@1.0.0"


async def _greedy(sdk: openai.AsyncOpenAI, model: str) -> str:
    chat = await sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me about the sea."}],
        max_tokens=12,
        temperature=0,
    )
    return chat.choices[0].message.content or ""


async def test_the_engines_model_is_registered_and_a_pinned_version_is_served(
    running: Running,
) -> None:
    async with running.admin() as admin:
        listed = (await admin.get("/admin/models")).json()["data"]
    assert _ref(running) in {f"{m['name']}@{m['version']}" for m in listed}
    raw = await running.sdk().chat.completions.with_raw_response.create(
        model=_ref(running), messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert raw.parse().model == _ref(running)
    assert "deprecation" not in raw.headers
    unknown = await running.http().post(
        "/v1/chat/completions",
        json={"model": "tiny-llama0@9.9.9", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"


async def test_an_adapter_is_a_model_of_its_tenant_only(running: Running, tmp_path: Path) -> None:
    model_dir = running.service.settings.model_dir
    assert model_dir is not None
    adapter = write_random_adapter(model_dir, tmp_path / "a", 8, "all-linear", seed=3, b_std=1.0)
    files = {
        n: (n, (adapter / n).read_bytes())
        for n in ("adapter_config.json", "adapter_model.safetensors")
    }
    async with running.http() as http:
        up = await http.post(
            "/v1/adapters", data={"name": "sea-bot", "base_model": _ref(running)}, files=files
        )
    assert up.status_code == 201 and up.json()["status"] == "ready", up.text

    sdk = running.sdk()
    tuned = await _greedy(sdk, "sea-bot")
    assert tuned != await _greedy(sdk, running.model)
    assert "sea-bot" in {m.id for m in (await sdk.models.list()).data}
    assert (await sdk.models.retrieve("sea-bot")).id == "sea-bot"

    other = running.sdk(running.globex.key)
    with pytest.raises(openai.NotFoundError) as e:
        await _greedy(other, "sea-bot")
    assert e.value.status_code == 404
    assert "sea-bot" not in {m.id for m in (await other.models.list()).data}
    async with running.http(running.globex.key) as http:
        assert (await http.delete("/v1/adapters/sea-bot")).status_code == 404

    async with running.http() as http:
        assert (await http.delete("/v1/adapters/sea-bot")).status_code == 200
    with pytest.raises(openai.NotFoundError):
        await _greedy(sdk, "sea-bot")


async def test_deprecated_then_archived_versions(running: Running) -> None:
    ref = _ref(running)
    name, version = ref.split("@")
    end = (datetime.now(UTC) + timedelta(days=120)).date().isoformat()
    async with running.admin() as admin:
        r = await admin.post(f"/admin/models/{name}/{version}/deprecate", json={"end_date": end})
        assert r.status_code == 200, r.text
    body = {"model": ref, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    await _wait_for(running, body, lambda r: "deprecation" in r.headers)
    async with running.http() as http:
        served = await http.post("/v1/chat/completions", json=body)
    assert served.status_code == 200
    assert "deprecated" in served.headers["warning"] and end[:4] in served.headers["sunset"]

    async with running.admin() as admin:
        r = await admin.post(f"/admin/models/{name}/{version}/archive", json={})
        assert r.status_code == 200, r.text
    gone = await _wait_for(running, body, lambda r: r.status_code == 404)
    assert gone.json()["error"]["code"] == "model_archived"
    assert ref in gone.json()["error"]["message"]


async def _wait_for(running: Running, body: dict, done) -> httpx.Response:
    """The first answer for which `done` holds (resolutions are cached up to 2 s)."""
    async with running.http() as http:
        for _ in range(40):
            response = await http.post("/v1/chat/completions", json=body)
            if done(response):
                return response
            await _sleep(0.1)
    raise AssertionError(f"never done: {response.status_code} {response.text[:200]}")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
