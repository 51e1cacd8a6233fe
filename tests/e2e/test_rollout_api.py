"""The rollout admin API over HTTP (an app with the rollout routes and the gateway's error
handlers, through httpx's ASGI transport) and `tenantserve rollout ...` in direct mode on a
data dir: 401 without the admin token, a start → status → promote → rollback round trip,
400 / 404 in OpenAI's shape, the same JSON from the CLI."""

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
from tenantserve.gateway.routes_rollout import RolloutRoutes
from tenantserve.registry.artifacts import LocalArtifactStore
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.registry.service import RegistryService
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate

ADMIN_TOKEN = "tsadm-rollout-test-token"
CLEAN_ENV = {
    "TENANTSERVE_URL": None,
    "TENANTSERVE_DATABASE_URL": None,
    "TENANTSERVE_ADMIN_TOKEN": None,
    "TENANTSERVE_DATA_DIR": None,
    "TENANTSERVE_ARTIFACT_STORE": None,
}
ROLLOUT_FIELDS = {
    "id", "object", "model", "stable", "candidate", "phase", "percent", "step",
    "step_started_at", "created_at", "finished_at", "plan", "history", "stats",
}  # fmt: skip


def _checkpoint(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"torch_dtype": "float32"}')
    (root / "model.safetensors").write_bytes(weights)
    return root


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    await migrate(url)
    db = Database(url)
    registry = RegistryService(
        lambda: RegistryUnitOfWork(db.sessionmaker), LocalArtifactStore(tmp_path / "artifacts")
    )
    await registry.register(_checkpoint(tmp_path / "a", b"a"), "m", "1.0.0")
    await registry.register(_checkpoint(tmp_path / "b", b"b"), "m", "1.1.0", status="canary")
    app = FastAPI()
    install_error_handlers(app)
    RolloutRoutes(RolloutService(lambda: RegistryUnitOfWork(db.sessionmaker)), ADMIN_TOKEN).install(
        app
    )
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


async def test_rollout_endpoints_refuse_a_missing_or_wrong_admin_token(
    admin: httpx.AsyncClient,
) -> None:
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/admin/rollouts", {"model": "m", "candidate": "1.1.0"}),
        ("GET", "/admin/rollouts", None),
        ("GET", "/admin/rollouts/m", None),
        ("POST", "/admin/rollouts/m/promote", {}),
        ("POST", "/admin/rollouts/m/rollback", {"reason": "x"}),
    ]
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        for method, path, body in calls:
            r = await admin.request(method, path, json=body, headers=headers)
            assert _error(r, 401)["code"] == "invalid_api_key", (method, path)
    assert _error(await admin.get("/admin/rollouts/m"), 404)["code"] == "not_found"


async def test_a_rollout_round_trips_through_the_admin_api(admin: httpx.AsyncClient) -> None:
    r = await admin.post(
        "/admin/rollouts",
        json={"model": "m", "candidate": "1.1.0", "shadow_percent": 0, "step_seconds": 30},
    )
    assert r.status_code == 201, r.text
    started = r.json()
    assert set(started) == ROLLOUT_FIELDS
    assert (started["stable"], started["candidate"], started["phase"], started["percent"]) == (
        "m@1.0.0",
        "m@1.1.0",
        "canary",
        1.0,
    )
    assert started["plan"]["canary_steps"] == [1.0, 10.0, 100.0]
    assert started["stats"]["candidate"]["requests"] == 0
    again = await admin.post("/admin/rollouts", json={"model": "m", "candidate": "1.1.0"})
    assert "already has a running rollout" in _error(again, 400)["message"]

    assert (await admin.get("/admin/rollouts/m")).json()["id"] == started["id"]
    listed = (await admin.get("/admin/rollouts")).json()["data"]
    assert [x["id"] for x in listed] == [started["id"]]
    promoted = (await admin.post("/admin/rollouts/m/promote")).json()
    assert (promoted["percent"], promoted["step"]) == (10.0, "canary 10%")
    r = await admin.post("/admin/rollouts/m/rollback", json={"reason": "pager went off"})
    rolled = r.json()
    assert rolled["phase"] == "rolled_back" and rolled["finished_at"] is not None
    assert [e["percent"] for e in rolled["history"]] == [1.0, 10.0, 0.0]
    assert rolled["history"][-1]["reason"] == "rolled back by hand: pager went off"
    assert (await admin.get("/admin/rollouts")).json()["data"] == []
    assert _error(await admin.post("/admin/rollouts/m/promote"), 404)["code"] == "not_found"


async def test_bad_rollout_requests_are_400_and_unknown_versions_404(
    admin: httpx.AsyncClient,
) -> None:
    r = await admin.post("/admin/rollouts", json={"model": "m", "candidate": "1.1.0", "x": 1})
    assert _error(r, 400)
    bad_steps = {"model": "m", "candidate": "1.1.0", "canary_steps": [10, 5]}
    assert (
        "canary steps"
        in _error(await admin.post("/admin/rollouts", json=bad_steps), 400)["message"]
    )
    r = await admin.post("/admin/rollouts", json={"model": "m", "candidate": "9.0.0"})
    assert _error(r, 404)["code"] == "not_found"
    assert _error(await admin.post("/admin/rollouts", content=b"{"), 400)["message"]


def _cli(args: list[str], data_dir: Path) -> tuple[int, Any, str]:
    result = CliRunner().invoke(cli_app, [*args, "--data-dir", str(data_dir)], env=CLEAN_ENV)
    out = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, out, result.stderr


def test_the_cli_starts_shows_promotes_and_rolls_back_on_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for version, weights, extra in (("1.0.0", b"a", []), ("1.1.0", b"b", ["--canary"])):
        ckpt = _checkpoint(tmp_path / version, weights)
        code, _, err = _cli(
            ["model", "register", str(ckpt), "--name", "m", "--version", version, *extra],
            data_dir,
        )
        assert code == 0, err
    code, started, err = _cli(
        ["rollout", "start", "m", "--candidate", "m@1.1.0", "--shadow-percent", "5"], data_dir
    )
    assert code == 0, err
    assert set(started) == ROLLOUT_FIELDS and started["step"] == "shadow 5%"
    code, status, err = _cli(["rollout", "status", "m"], data_dir)
    assert code == 0 and status["id"] == started["id"], err
    code, promoted, err = _cli(["rollout", "promote", "m", "--reason", "shadow clean"], data_dir)
    assert code == 0 and promoted["step"] == "canary 1%", err
    assert promoted["history"][-1]["reason"] == "promoted by hand: shadow clean"
    code, rolled, err = _cli(["rollout", "rollback", "m", "--reason", "not today"], data_dir)
    assert code == 0 and rolled["phase"] == "rolled_back", err
    code, _, err = _cli(["rollout", "promote", "m"], data_dir)
    assert code == 1 and "no running rollout" in err
    code, _, err = _cli(["rollout", "start", "m", "--candidate", "1.1.0", "--step", "5"], data_dir)
    assert code == 2 and "canary steps" in err and err.count("\n") == 1
