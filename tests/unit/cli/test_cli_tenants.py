"""`tenantserve tenant ...` / `tenantserve key ...` in direct mode on a temporary data dir,
and the demo tenants of `tenantserve up --demo`."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tenantserve.bootstrap import open_tenancy
from tenantserve.cli.demo import DEMO_KEYS_FILE, ensure_demo_tenants
from tenantserve.cli.main import app
from tenantserve.config import Settings
from tenantserve.errors import CredentialsRevokedError
from tenantserve.tenancy.model import TenantContext
from tenantserve.tiers import Tier

# Unset so a developer's shell cannot switch the commands to API mode or another database.
CLEAN_ENV = {
    "TENANTSERVE_URL": None,
    "TENANTSERVE_DATABASE_URL": None,
    "TENANTSERVE_ADMIN_TOKEN": None,
    "TENANTSERVE_API_KEY_PEPPER": None,
    "TENANTSERVE_DATA_DIR": None,
}


def _cli(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)], env=CLEAN_ENV)


def _ok(data_dir: Path, *args: str) -> Any:
    result = _cli(data_dir, *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _authenticate(data_dir: Path, key: str) -> TenantContext:
    async def go() -> TenantContext:
        tenancy = await open_tenancy(Settings(data_dir=data_dir))
        try:
            return await tenancy.service.authenticate(key)
        finally:
            await tenancy.db.dispose()

    return asyncio.run(go())


def test_tenant_create_prints_the_tenant_json_with_its_id(tmp_path: Path) -> None:
    tenant = _ok(
        tmp_path, "tenant", "create", "--name", "acme", "--tier", "premium", "--region", "eu"
    )
    assert tenant["id"].startswith("ten_")
    assert tenant["name"] == "acme"
    assert (tenant["tier"], tenant["region"], tenant["status"]) == ("premium", "eu", "active")
    assert tenant["limits"] == {}


def test_unknown_tier_fails_in_one_line_naming_the_choices(tmp_path: Path) -> None:
    result = _cli(
        tmp_path, "tenant", "create", "--name", "acme", "--tier", "gold", "--region", "us"
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "\n" not in message
    assert "free, standard, premium" in message
    assert "'gold'" in message


def test_unknown_region_fails_naming_the_choices(tmp_path: Path) -> None:
    result = _cli(
        tmp_path, "tenant", "create", "--name", "acme", "--tier", "free", "--region", "mars"
    )
    assert result.exit_code == 2
    assert "us, eu" in result.stderr


def test_tenant_list_shows_every_tenant_oldest_first(tmp_path: Path) -> None:
    assert _ok(tmp_path, "tenant", "list") == []
    first = _ok(tmp_path, "tenant", "create", "--name", "a", "--tier", "free", "--region", "us")
    second = _ok(
        tmp_path, "tenant", "create", "--name", "b", "--tier", "standard", "--region", "eu"
    )
    assert _ok(tmp_path, "tenant", "list") == [first, second]


def test_tenant_update_changes_only_the_given_fields_and_merges_limits(tmp_path: Path) -> None:
    tenant = _ok(tmp_path, "tenant", "create", "--name", "a", "--tier", "free", "--region", "us")
    updated = _ok(
        tmp_path,
        "tenant",
        "update",
        tenant["id"],
        "--tier",
        "standard",
        "--limits",
        '{"requests_per_minute": 10}',
    )
    assert (updated["tier"], updated["region"]) == ("standard", "us")
    assert updated["limits"] == {"requests_per_minute": 10}
    suspended = _ok(
        tmp_path, "tenant", "update", tenant["id"], "--status", "suspended", "--limits", "{}"
    )
    assert suspended["status"] == "suspended"
    assert suspended["limits"] == {"requests_per_minute": 10}
    assert _ok(tmp_path, "tenant", "list") == [suspended]


def test_tenant_update_refuses_malformed_limits_and_unknown_ids(tmp_path: Path) -> None:
    tenant = _ok(tmp_path, "tenant", "create", "--name", "a", "--tier", "free", "--region", "us")
    bad_json = _cli(tmp_path, "tenant", "update", tenant["id"], "--limits", "rpm=10")
    assert bad_json.exit_code == 2
    assert "requests_per_minute" in bad_json.stderr
    unknown_limit = _cli(tmp_path, "tenant", "update", tenant["id"], "--limits", '{"rpm": 1}')
    assert unknown_limit.exit_code == 2
    assert "unknown limit(s) rpm" in unknown_limit.stderr
    missing = _cli(tmp_path, "tenant", "update", "ten_nope", "--tier", "free")
    assert missing.exit_code == 1
    assert "tenantserve tenant list" in missing.stderr
    nothing = _cli(tmp_path, "tenant", "update", tenant["id"])
    assert nothing.exit_code == 2
    assert "--tier" in nothing.stderr


def test_tenant_update_replaces_quotas_and_the_key_context_carries_them(tmp_path: Path) -> None:
    tenant = _ok(tmp_path, "tenant", "create", "--name", "a", "--tier", "free", "--region", "us")
    assert tenant["quotas"] == []
    key = _ok(tmp_path, "key", "create", "--tenant", tenant["id"])["key"]
    quotas = [
        {"metric": "tokens", "period": "month", "limit": 1000000, "enforcement": "hard"},
        {"metric": "requests", "period": "day", "limit": 100, "enforcement": "soft"},
    ]
    updated = _ok(tmp_path, "tenant", "update", tenant["id"], "--quotas", json.dumps(quotas))
    assert updated["quotas"] == quotas
    assert _ok(tmp_path, "tenant", "list") == [updated]
    context = _authenticate(tmp_path, key)
    assert [q.to_dict() for q in context.quotas] == quotas
    cleared = _ok(tmp_path, "tenant", "update", tenant["id"], "--quotas", "[]")
    assert cleared["quotas"] == []


def test_tenant_update_refuses_malformed_and_unknown_quotas(tmp_path: Path) -> None:
    tenant = _ok(tmp_path, "tenant", "create", "--name", "a", "--tier", "free", "--region", "us")
    for bad, message in [
        ("tokens=5", "not valid JSON"),
        ('{"metric": "tokens"}', "JSON list of objects"),
        ('[{"metric": "gpus", "period": "day", "limit": 1, "enforcement": "hard"}]', "gpus"),
        ('[{"metric": "tokens", "period": "day", "limit": 1}]', "missing enforcement"),
    ]:
        result = _cli(tmp_path, "tenant", "update", tenant["id"], "--quotas", bad)
        assert result.exit_code == 2, (bad, result.output)
        assert message in result.stderr
        assert "\n" not in result.stderr.strip()
    assert _ok(tmp_path, "tenant", "list")[0]["quotas"] == []


def test_key_create_shows_the_plaintext_once_and_revoke_stops_it_authenticating(
    tmp_path: Path,
) -> None:
    tenant = _ok(tmp_path, "tenant", "create", "--name", "a", "--tier", "free", "--region", "us")
    created = _ok(
        tmp_path, "key", "create", "--tenant", tenant["id"], "--expires", "30", "--models", "m1,m2"
    )
    plaintext = created["key"]
    assert plaintext.startswith(created["prefix"] + "-")
    assert created["tenant_id"] == tenant["id"]
    assert created["allowed_models"] == ["m1", "m2"]
    assert created["expires_at"] is not None
    assert created["revoked_at"] is None
    context = _authenticate(tmp_path, plaintext)
    assert (context.tenant_id, context.key_id) == (tenant["id"], created["id"])

    revoked = _ok(tmp_path, "key", "revoke", created["id"])
    assert "key" not in revoked
    assert revoked["id"] == created["id"]
    assert revoked["revoked_at"] is not None
    with pytest.raises(CredentialsRevokedError):
        _authenticate(tmp_path, plaintext)


def test_key_commands_name_unknown_tenants_and_keys(tmp_path: Path) -> None:
    no_tenant = _cli(tmp_path, "key", "create", "--tenant", "ten_nope")
    assert no_tenant.exit_code == 1
    assert "no tenant 'ten_nope'" in no_tenant.stderr
    no_key = _cli(tmp_path, "key", "revoke", "key_nope")
    assert no_key.exit_code == 1
    assert "no API key 'key_nope'" in no_key.stderr


def test_api_mode_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    result = _cli(tmp_path, "tenant", "list", "--url", "http://127.0.0.1:1", "--admin-token", "t")
    assert result.exit_code == 1
    assert "tenantserve up" in result.stderr
    assert "--url" in result.stderr


def test_api_mode_without_an_admin_token_says_where_to_get_one(tmp_path: Path) -> None:
    result = _cli(tmp_path, "tenant", "list", "--url", "http://127.0.0.1:1")
    assert result.exit_code == 2
    assert "--admin-token" in result.stderr
    assert not (tmp_path / "admin_token").exists()  # never invents a token the server lacks


async def test_demo_tenants_are_created_once_and_keep_their_keys(tmp_path: Path) -> None:
    tenancy = await open_tenancy(Settings(data_dir=tmp_path))
    try:
        first = await ensure_demo_tenants(tenancy.service, tmp_path)
        second = await ensure_demo_tenants(tenancy.service, tmp_path)
        tenants = await tenancy.service.list_tenants()
        contexts = [await tenancy.service.authenticate(d.api_key) for d in second]
    finally:
        await tenancy.db.dispose()

    assert second == first
    assert [d.name for d in first] == ["demo-free", "demo-standard", "demo-premium"]
    assert sorted(t.name for t in tenants) == ["demo-free", "demo-premium", "demo-standard"]
    assert [c.tier for c in contexts] == [Tier.FREE, Tier.STANDARD, Tier.PREMIUM]
    assert [c.tenant_id for c in contexts] == [d.tenant_id for d in first]
    assert all(t.region.value == "us" for t in tenants)
    keys_file = tmp_path / DEMO_KEYS_FILE
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    stored = json.loads(keys_file.read_text())["tenants"]
    assert [d["api_key"] for d in stored] == [d.api_key for d in first]


async def test_a_demo_key_that_no_longer_authenticates_is_replaced(tmp_path: Path) -> None:
    tenancy = await open_tenancy(Settings(data_dir=tmp_path))
    try:
        first = await ensure_demo_tenants(tenancy.service, tmp_path)
        await tenancy.service.revoke_key(first[1].key_id)
        second = await ensure_demo_tenants(tenancy.service, tmp_path)
        fresh = await tenancy.service.authenticate(second[1].api_key)
        num_tenants = len(await tenancy.service.list_tenants())
    finally:
        await tenancy.db.dispose()

    assert second[0] == first[0] and second[2] == first[2]
    assert second[1].tenant_id == first[1].tenant_id
    assert second[1].api_key != first[1].api_key
    assert fresh.tenant_id == first[1].tenant_id
    assert num_tenants == 3


def test_log_content_is_off_by_default_and_opted_in_and_out_by_update(tmp_path: Path) -> None:
    tenant = _ok(tmp_path, "tenant", "create", "--name", "acme", "--tier", "free", "--region", "us")
    assert tenant["log_content"] is False
    key = _ok(tmp_path, "key", "create", "--tenant", tenant["id"])["key"]
    on = _ok(tmp_path, "tenant", "update", tenant["id"], "--log-content")
    assert on["log_content"] is True and on["tier"] == "free"
    assert _authenticate(tmp_path, key).log_content is True
    off = _ok(tmp_path, "tenant", "update", tenant["id"], "--no-log-content")
    assert off["log_content"] is False
