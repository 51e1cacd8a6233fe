"""Tenant adapter uploads over HTTP: an app with the adapter routes and the gateway's error
handlers (through httpx's ASGI transport), real API keys over a real tenancy service on
SQLite, the tiny Llama in the registry, and a real engine running the smoke test."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from tenantserve.bootstrap import open_tenancy
from tenantserve.config import Settings
from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.config import CacheConfig, EngineConfig
from tenantserve.gateway.auth import Authenticator
from tenantserve.gateway.errors import install_error_handlers
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.routes_adapters import AdapterRoutes
from tenantserve.registry.adapter_service import AdapterService
from tenantserve.registry.adapter_smoke import NO_CHANGE_REPORT, EngineSmokeTester
from tenantserve.registry.artifact_cache import ArtifactCache
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tests.helpers.lora import set_adapter_config, write_random_adapter, zero_lora_b
from tests.helpers.server import add_tenant

pytestmark = pytest.mark.asyncio(loop_scope="module")

BASE = "tiny-llama"
ADAPTER_FIELDS = {
    "id", "object", "name", "version", "base_model", "status", "rank", "target_modules",
    "size_bytes", "created_at", "report",
}  # fmt: skip


@dataclass(frozen=True)
class Api:
    app: FastAPI
    acme_key: str
    globex_key: str
    events: EventLog
    adapter_dir: Path
    zero_dir: Path

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://test",
            headers={"Authorization": f"Bearer {key or self.acme_key}"},
            timeout=120,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    data_dir = tmp_path_factory.mktemp("data")
    tenancy = await open_tenancy(Settings(data_dir=data_dir))
    acme = await add_tenant(tenancy.service, "acme")
    globex = await add_tenant(tenancy.service, "globex")
    await tenancy.registry.register(tiny_model_dir, BASE, "1.0.0")
    adapters = tmp_path_factory.mktemp("adapters")
    adapter_dir = write_random_adapter(
        tiny_model_dir, adapters / "good", 4, ["q_proj", "v_proj"], 3
    )
    set_adapter_config(adapter_dir, base_model_name_or_path=BASE)
    zero_dir = write_random_adapter(tiny_model_dir, adapters / "zero", 4, ["q_proj"], 4)
    zero_lora_b(set_adapter_config(zero_dir, base_model_name_or_path=BASE))
    config = EngineConfig(
        model_dir=tiny_model_dir, cache=replace(CacheConfig(), kv_cache_bytes=16 << 20)
    )
    events = EventLog()
    try:
        async with AsyncEngineClient(config) as engine:
            service = AdapterService(
                lambda: RegistryUnitOfWork(tenancy.db.sessionmaker),
                tenancy.registry,
                ArtifactCache(tenancy.registry.store, data_dir / "cache"),
                EngineSmokeTester(lambda ref: engine if ref == f"{BASE}@1.0.0" else None),
                data_dir / "adapters",
                max_adapter_bytes=8 << 20,
                max_lora_rank=16,
                on_event=events.append,
                rollouts=RolloutService(lambda: RegistryUnitOfWork(tenancy.db.sessionmaker)),
            )
            app = FastAPI()
            install_error_handlers(app)
            AdapterRoutes(Authenticator(tenancy.service), service).install(app)
            yield Api(app, acme.key, globex.key, events, adapter_dir, zero_dir)
    finally:
        await tenancy.db.dispose()


def _files(adapter_dir: Path) -> dict[str, tuple[str, bytes]]:
    return {
        name: (name, (adapter_dir / name).read_bytes())
        for name in ("adapter_config.json", "adapter_model.safetensors")
    }


def _tar_gz(adapter_dir: Path, members: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (_, content) in _files(adapter_dir).items():
            info = tarfile.TarInfo(f"adapter/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, content in (members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


async def test_an_upload_answers_201_ready_and_is_listed_read_and_deleted(api: Api) -> None:
    async with api.client() as http:
        r = await http.post("/v1/adapters", data={"name": "bot"}, files=_files(api.adapter_dir))
        assert r.status_code == 201, r.text
        body = r.json()
        assert set(body) == ADAPTER_FIELDS
        assert body["object"] == "adapter" and body["status"] == "ready"
        assert (body["name"], body["base_model"], body["rank"]) == ("bot", f"{BASE}@1.0.0", 4)
        assert body["target_modules"] == ["q_proj", "v_proj"] and body["report"] is None
        assert body["version"] == 1
        one = (await http.get("/v1/adapters/bot")).json()
        assert {k: v for k, v in one.items() if k != "versions"} == body
        assert [(v["version"], v["id"]) for v in one["versions"]] == [(1, body["id"])]
        listed = (await http.get("/v1/adapters")).json()
        assert listed["object"] == "list" and body in listed["data"]
        # A second upload is version 2, rolled out over version 1 (still the current one).
        again = await http.post("/v1/adapters", data={"name": "bot"}, files=_files(api.adapter_dir))
        assert again.status_code == 201 and again.json()["version"] == 2, again.text
        one = (await http.get("/v1/adapters/bot")).json()
        assert one["id"] == body["id"] and [v["version"] for v in one["versions"]] == [1, 2]
        assert [a["version"] for a in (await http.get("/v1/adapters")).json()["data"]
                if a["name"] == "bot"] == [1]  # fmt: skip
        # While version 2 rolls out, another version is refused.
        third = await http.post("/v1/adapters", data={"name": "bot"}, files=_files(api.adapter_dir))
        assert third.status_code == 409 and _error(third)["code"] == "adapter_exists"
        assert "rolled out" in _error(third)["message"]
        deleted = await http.delete("/v1/adapters/bot")
        assert deleted.status_code == 200 and deleted.json()["id"] == body["id"]
        gone = await http.get("/v1/adapters/bot")
        assert gone.status_code == 404 and _error(gone)["code"] == "not_found"


async def test_an_archive_upload_is_unpacked_and_ready(api: Api) -> None:
    async with api.client() as http:
        archive = _tar_gz(api.adapter_dir, {"adapter/README.md": b"# notes"})
        r = await http.post(
            "/v1/adapters",
            data={"name": "archived"},
            files={"archive": ("adapter.tar.gz", archive)},
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "ready"


async def test_a_zero_b_adapter_fails_its_smoke_test_with_a_report_and_an_operator_event(
    api: Api,
) -> None:
    async with api.client() as http:
        r = await http.post("/v1/adapters", data={"name": "zero"}, files=_files(api.zero_dir))
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "failed" and r.json()["report"] == NO_CHANGE_REPORT
        assert (await http.get("/v1/adapters/zero")).json()["status"] == "failed"
    events = [e for e in api.events.events() if e.kind == "adapter_failed"]
    assert [e.details["adapter"] for e in events] == ["zero"]


async def test_bad_uploads_are_4xx_in_openai_shape_naming_the_problem(api: Api) -> None:
    async with api.client() as http:
        no_name = await http.post("/v1/adapters", files=_files(api.adapter_dir))
        assert no_name.status_code == 400 and _error(no_name)["param"] == "name"
        bad_name = await http.post(
            "/v1/adapters", data={"name": "../x"}, files=_files(api.adapter_dir)
        )
        assert bad_name.status_code == 400 and "adapter name" in _error(bad_name)["message"]
        not_multipart = await http.post("/v1/adapters", json={"name": "x"})
        assert not_multipart.status_code == 400
        files = _files(api.adapter_dir)
        files["adapter_model.safetensors"] = ("w", files["adapter_model.safetensors"][1][:200])
        truncated = await http.post("/v1/adapters", data={"name": "t"}, files=files)
        assert truncated.status_code == 400 and "truncated" in _error(truncated)["message"]
        sneaky = _tar_gz(api.adapter_dir, {"../evil.txt": b"x"})
        r = await http.post(
            "/v1/adapters", data={"name": "s"}, files={"archive": ("a.tar.gz", sneaky)}
        )
        assert r.status_code == 400 and "unsafe path" in _error(r)["message"]
        big = {"archive": ("a.tar.gz", b"\x1f\x8b" + b"\0" * (9 << 20))}
        too_large = await http.post("/v1/adapters", data={"name": "big"}, files=big)
        assert too_large.status_code == 413 and _error(too_large)["code"] == "adapter_too_large"
        pickle = await http.post(
            "/v1/adapters",
            data={"name": "p"},
            files={"adapter_model.bin": ("adapter_model.bin", b"\x80\x04")},
        )
        assert pickle.status_code == 400 and "pickle" in _error(pickle)["message"]
        listed = (await http.get("/v1/adapters")).json()["data"]
        assert not {a["name"] for a in listed} & {"t", "s", "big", "p"}
    async with api.client("ts-nope-nope") as anonymous:
        assert (await anonymous.get("/v1/adapters")).status_code == 401


async def test_another_tenant_gets_404_for_an_adapter_it_does_not_own(api: Api) -> None:
    async with api.client() as acme, api.client(api.globex_key) as globex:
        r = await acme.post("/v1/adapters", data={"name": "mine"}, files=_files(api.adapter_dir))
        assert r.status_code == 201
        assert (await globex.get("/v1/adapters/mine")).status_code == 404
        assert (await globex.delete("/v1/adapters/mine")).status_code == 404
        assert "mine" not in {a["name"] for a in (await globex.get("/v1/adapters")).json()["data"]}
        assert (await acme.get("/v1/adapters/mine")).json()["status"] == "ready"
