"""`tenantserve tenant ...` / `key ...` with `--url`: the CLI through the admin API of a
real server (uvicorn on a free port, the tiny model), printing the same JSON as direct mode.

The CLI runs its own event loop, so each invocation runs on a worker thread while the
server keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner, Result

from tenantserve.cli.main import app
from tests.helpers.server import ADMIN_TOKEN, serve, server_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLEAN_ENV = {
    "TENANTSERVE_URL": None,
    "TENANTSERVE_DATABASE_URL": None,
    "TENANTSERVE_ADMIN_TOKEN": None,
    "TENANTSERVE_API_KEY_PEPPER": None,
    "TENANTSERVE_DATA_DIR": None,
}


@dataclass(frozen=True)
class Server:
    url: str
    data_dir: Path

    async def cli(self, *args: str, admin_token: str = ADMIN_TOKEN) -> Result:
        argv = [*args, "--url", self.url, "--admin-token", admin_token]
        return await asyncio.to_thread(CliRunner().invoke, app, argv, env=CLEAN_ENV)

    async def ok(self, *args: str) -> Any:
        result = await self.cli(*args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    async def direct(self, *args: str) -> Any:
        argv = [*args, "--data-dir", str(self.data_dir)]
        result = await asyncio.to_thread(CliRunner().invoke, app, argv, env=CLEAN_ENV)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    async def models_status(self, api_key: str) -> int:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            response = await http.get("/v1/models", headers={"Authorization": f"Bearer {api_key}"})
        return response.status_code


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    data_dir = tmp_path_factory.mktemp("cli-admin-data")
    async with serve(server_settings(data_dir, tiny_model_dir)) as (url, _service):
        yield Server(url=url, data_dir=data_dir)


async def test_api_mode_manages_tenants_and_keys_with_the_same_json_as_direct_mode(
    server: Server,
) -> None:
    tenant = await server.ok(
        "tenant", "create", "--name", "acme", "--tier", "standard", "--region", "us"
    )
    assert tenant["id"].startswith("ten_")
    assert (tenant["tier"], tenant["region"], tenant["status"]) == ("standard", "us", "active")

    updated = await server.ok(
        "tenant", "update", tenant["id"], "--limits", '{"requests_per_minute": 50}'
    )
    assert updated["limits"] == {"requests_per_minute": 50}
    quotas = [{"metric": "tokens", "period": "day", "limit": 9000, "enforcement": "soft"}]
    updated = await server.ok("tenant", "update", tenant["id"], "--quotas", json.dumps(quotas))
    assert updated["quotas"] == quotas
    assert updated["limits"] == {"requests_per_minute": 50}
    listed = await server.ok("tenant", "list")
    assert updated in listed
    assert await server.direct("tenant", "list") == listed

    created = await server.ok("key", "create", "--tenant", tenant["id"], "--expires", "1")
    assert created["key"].startswith(created["prefix"] + "-")
    assert await server.models_status(created["key"]) == 200

    revoked = await server.ok("key", "revoke", created["id"])
    assert revoked["revoked_at"] is not None
    assert "key" not in revoked
    assert await server.models_status(created["key"]) == 401


async def test_api_mode_reports_bad_input_unknown_ids_and_a_wrong_admin_token(
    server: Server,
) -> None:
    bad_tier = await server.cli(
        "tenant", "create", "--name", "x", "--tier", "gold", "--region", "us"
    )
    assert bad_tier.exit_code == 2
    assert "free, standard, premium" in bad_tier.stderr

    tenant = await server.ok("tenant", "create", "--name", "y", "--tier", "free", "--region", "us")
    duplicate = {"metric": "requests", "period": "day", "limit": 1, "enforcement": "hard"}
    bad_quotas = await server.cli(
        "tenant", "update", tenant["id"], "--quotas", json.dumps([duplicate, duplicate])
    )
    assert bad_quotas.exit_code == 2
    assert "more than one quota" in bad_quotas.stderr

    unknown = await server.cli("key", "create", "--tenant", "ten_nope")
    assert unknown.exit_code == 1
    assert "tenantserve tenant list" in unknown.stderr

    refused = await server.cli("tenant", "list", admin_token="wrong")
    assert refused.exit_code == 1
    assert "--admin-token" in refused.stderr
    assert "\n" not in refused.stderr.strip()


async def test_api_mode_registers_lists_deprecates_and_archives_model_versions(
    server: Server, tiny_model_dir: Path
) -> None:
    # The server registered its own model at start; the CLI sees it through the API.
    listed = await server.ok("model", "list")
    [served] = [v for v in listed if v["version"] == "1.0.0"]
    name = served["name"]
    registered = await server.ok(
        "model", "register", str(tiny_model_dir), "--name", "cli-model", "--version", "1.0.0"
    )
    assert (registered["name"], registered["status"]) == ("cli-model", "active")
    again = await server.ok(
        "model", "register", str(tiny_model_dir), "--name", "cli-model", "--version", "1.0.0"
    )
    assert again["digest"] == registered["digest"]  # identical content: a no-op
    assert {v["name"] for v in await server.direct("model", "list")} >= {name, "cli-model"}

    too_soon = await server.cli("model", "deprecate", "cli-model@1.0.0", "--end-date", "2020-01-01")
    assert too_soon.exit_code == 2 and "90 days" in too_soon.output
    deprecated = await server.ok(
        "model", "deprecate", "cli-model@1.0.0", "--end-date", "2099-01-01"
    )
    assert deprecated["status"] == "deprecated"
    archived = await server.ok("model", "archive", "cli-model@1.0.0")
    assert archived["status"] == "archived"
    wrong = await server.cli("model", "list", admin_token="tsadm-wrong")
    assert wrong.exit_code == 1
