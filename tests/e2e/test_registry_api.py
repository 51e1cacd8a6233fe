"""The registry's admin API over HTTP (an app with the registry routes and the gateway's
error handlers, through httpx's ASGI transport) and `tenantserve model ...` in direct mode
on a data dir: the same JSON both ways, 401 without the admin token, 400s in OpenAI's shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from tenantserve.cli.main import app as cli_app
from tenantserve.gateway.errors import install_error_handlers
from tenantserve.gateway.routes_registry import RegistryRoutes
from tenantserve.registry.artifacts import LocalArtifactStore
from tenantserve.registry.service import RegistryService
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate

ADMIN_TOKEN = "tsadm-registry-test-token"
CLEAN_ENV = {
    "TENANTSERVE_URL": None,
    "TENANTSERVE_DATABASE_URL": None,
    "TENANTSERVE_ADMIN_TOKEN": None,
    "TENANTSERVE_DATA_DIR": None,
    "TENANTSERVE_ARTIFACT_STORE": None,
}
VERSION_FIELDS = {
    "id", "object", "name", "version", "digest", "format", "quantization", "runtimes",
    "min_memory_bytes", "device", "status", "scope", "size_bytes", "artifact_uri", "files",
    "created_at", "deprecated_at", "deprecation_end_date", "replacement", "archived_at",
}  # fmt: skip


def _checkpoint(root: Path, weights: bytes = b"w" * 2048) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"torch_dtype": "float32"}')
    (root / "model.safetensors").write_bytes(weights)
    return root


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    await migrate(url)
    db = Database(url)
    service = RegistryService(
        lambda: RegistryUnitOfWork(db.sessionmaker), LocalArtifactStore(tmp_path / "artifacts")
    )
    app = FastAPI()
    install_error_handlers(app)
    RegistryRoutes(service, ADMIN_TOKEN).install(app)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as client:
        yield client
    await db.dispose()


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return dict(error)


async def test_registry_endpoints_refuse_a_missing_or_wrong_admin_token(
    admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = {"path": str(_checkpoint(tmp_path / "ckpt")), "name": "m", "version": "1.0.0"}
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/admin/models", body),
        ("GET", "/admin/models", None),
        ("GET", "/admin/models/m", None),
        ("POST", "/admin/models/m/1.0.0/deprecate", {"end_date": "2099-01-01"}),
        ("POST", "/admin/models/m/1.0.0/archive", {}),
    ]
    for headers in ({"Authorization": ""}, {"Authorization": f"Bearer {ADMIN_TOKEN}x"}):
        for method, path, json_body in calls:
            r = await admin.request(method, path, json=json_body, headers=headers)
            assert _error(r, 401)["code"] == "invalid_api_key", (method, path)
    assert (await admin.get("/admin/models")).json()["data"] == []


async def test_versions_round_trip_through_the_admin_api(
    admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = str(_checkpoint(tmp_path / "ckpt"))
    r = await admin.post("/admin/models", json={"path": path, "name": "m", "version": "1.0.0"})
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert set(v1) == VERSION_FIELDS
    assert (v1["id"], v1["status"], v1["quantization"], v1["format"]) == (
        "m@1.0.0",
        "active",
        "fp32",
        "safetensors",
    )
    again = await admin.post("/admin/models", json={"path": path, "name": "m", "version": "1.0.0"})
    assert again.status_code == 200 and again.json() == v1
    path2 = str(_checkpoint(tmp_path / "ckpt2", weights=b"2" * 10))
    r = await admin.post(
        "/admin/models",
        json={"path": path2, "name": "m", "version": "2.0.0", "quantization": "fp32"},
    )
    assert r.status_code == 201
    assert [v["id"] for v in (await admin.get("/admin/models")).json()["data"]] == [
        "m@1.0.0",
        "m@2.0.0",
    ]
    assert (await admin.get("/admin/models/m")).json()["data"][0] == v1
    r = await admin.post(
        "/admin/models/m/1.0.0/deprecate",
        json={"end_date": "2099-01-01", "replacement": "m@2.0.0"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["deprecation_end_date"]) == ("deprecated", "2099-01-01")
    r = await admin.post("/admin/models/m/1.0.0/archive", json={})
    assert (r.json()["status"], r.json()["replacement"]) == ("archived", "m@2.0.0")


async def test_bad_requests_are_openai_shaped_400s_and_unknown_models_404(
    admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = str(_checkpoint(tmp_path / "ckpt"))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"path": path, "name": "Bad Name", "version": "1.0.0"}, "model name"),
        ({"path": path, "name": "m", "version": "latest"}, "semver"),
        ({"path": path, "name": "m", "version": "1.0.0", "format": "onnx"}, "format"),
        ({"path": path, "name": "m", "version": "1.0.0", "surprise": 1}, "surprise"),
        ({"name": "m", "version": "1.0.0"}, "path"),
        ({"path": str(tmp_path / "nowhere"), "name": "m", "version": "1.0.0"}, "neither"),
    ]
    for body, fragment in cases:
        r = await admin.post("/admin/models", json=body)
        assert fragment in _error(r, 400)["message"], body
    await admin.post("/admin/models", json={"path": path, "name": "m", "version": "1.0.0"})
    other = str(_checkpoint(tmp_path / "other", weights=b"o"))
    r = await admin.post("/admin/models", json={"path": other, "name": "m", "version": "1.0.0"})
    assert "immutable" in _error(r, 400)["message"]
    r = await admin.post("/admin/models/m/1.0.0/deprecate", json={"end_date": "2020-01-01"})
    assert "or later" in _error(r, 400)["message"]
    r = await admin.post("/admin/models/m/1.0.0/archive", json={})
    assert "deprecate it first" in _error(r, 400)["message"]
    assert _error(await admin.get("/admin/models/nope"), 404)["code"] == "not_found"
    r = await admin.post("/admin/models/m/9.9.9/archive", json={})
    assert _error(r, 404)["code"] == "not_found"
    assert _error(await admin.post("/admin/models", content=b"{"), 400)["message"]


def _cli(args: list[str], data_dir: Path) -> tuple[int, Any, str]:
    result = CliRunner().invoke(cli_app, [*args, "--data-dir", str(data_dir)], env=CLEAN_ENV)
    out = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, out, result.stderr


def test_the_cli_registers_lists_deprecates_and_archives_on_the_data_dir(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ckpt = _checkpoint(tmp_path / "ckpt", weights=b"z" * (3 << 20))
    code, v1, err = _cli(
        ["model", "register", str(ckpt), "--name", "m", "--version", "1.0.0"], data_dir
    )
    assert code == 0, err
    assert set(v1) == VERSION_FIELDS and v1["id"] == "m@1.0.0"
    assert "upload" in err  # the progress bar went to stderr
    assert v1["artifact_uri"].startswith((data_dir / "artifacts").resolve().as_uri())
    ckpt2 = _checkpoint(tmp_path / "ckpt2", weights=b"y")
    code, v2, err = _cli(
        ["model", "register", str(ckpt2), "--name", "m", "--version", "1.1.0", "--canary"],
        data_dir,
    )
    assert code == 0 and v2["status"] == "canary", err
    code, listed, _ = _cli(["model", "list"], data_dir)
    assert code == 0 and [v["id"] for v in listed] == ["m@1.0.0", "m@1.1.0"]
    assert listed[0] == v1
    code, out, err = _cli(
        ["model", "deprecate", "m@1.0.0", "--end-date", "2099-01-01", "--replacement", "m@1.1.0"],
        data_dir,
    )
    assert code == 0 and out["status"] == "deprecated", err
    code, out, err = _cli(["model", "archive", "m@1.0.0"], data_dir)
    assert code == 0 and (out["status"], out["replacement"]) == ("archived", "m@1.1.0"), err


def test_cli_mistakes_are_one_line_with_exit_code_2_and_unknown_versions_1(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ckpt = _checkpoint(tmp_path / "ckpt")
    code, _, err = _cli(
        ["model", "register", str(ckpt), "--name", "m", "--version", "v1"], data_dir
    )
    assert code == 2 and err.count("\n") == 1 and "semver" in err
    code, _, err = _cli(["model", "deprecate", "m@1.0.0", "--end-date", "soon"], data_dir)
    assert code == 2 and "end_date" in err
    code, _, err = _cli(["model", "archive", "m@1.0.0"], data_dir)
    assert code == 1 and "model list" in err
