"""The audit log on a real server: operators' changes appear at `/admin/audit` with what
changed, reads of tenants' data are recorded too, tenants cannot read it, the chain
verifies, and the CLI (through `--url` and directly on the data dir) lists and verifies it
— naming the entry once someone edits the database behind the triggers' back."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tenantserve.cli.main import app
from tenantserve.storage.database import DATABASE_FILE
from tests.helpers.server import ADMIN_TOKEN, Running

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLEAN_ENV = {
    "TENANTSERVE_URL": None,
    "TENANTSERVE_DATABASE_URL": None,
    "TENANTSERVE_ADMIN_TOKEN": None,
    "TENANTSERVE_API_KEY_PEPPER": None,
    "TENANTSERVE_DATA_DIR": None,
}


async def _cli(*args: str) -> Result:
    """The CLI on a worker thread (it runs its own event loop) while the server serves."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=CLEAN_ENV)


async def _entries(running: Running, **params: str) -> list[dict[str, Any]]:
    async with running.admin() as admin:
        r = await admin.get("/admin/audit", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def test_a_tier_change_appears_with_from_and_to(running: Running) -> None:
    tenant_id = running.globex.id
    async with running.admin() as admin:
        r = await admin.patch(f"/admin/tenants/{tenant_id}", json={"tier": "premium"})
        assert r.status_code == 200, r.text
        key = await admin.post(f"/admin/tenants/{tenant_id}/keys", json={})
        assert key.status_code == 201, key.text
    [entry] = await _entries(running, action="tenant.update", target=tenant_id)
    assert entry["actor"] == "admin"
    assert entry["details"] == {"tier": {"from": "standard", "to": "premium"}}
    assert entry["at"].endswith("+00:00") and len(entry["hash"]) == 64
    [created] = await _entries(running, action="key.create", target=key.json()["id"])
    assert created["details"]["tenant_id"] == tenant_id
    assert key.json()["key"] not in json.dumps(created)


async def test_operator_reads_of_tenant_data_are_recorded(running: Running) -> None:
    async with running.admin() as admin:
        assert (await admin.get("/admin/usage", params={"tenant": running.acme.id})).is_success
        assert (await admin.get("/admin/events")).is_success
    [usage] = await _entries(running, action="usage.read", target=running.acme.id)
    assert usage["actor"] == "admin" and usage["details"]["granularity"] == "hour"
    assert await _entries(running, action="events.read")


async def test_pages_follow_the_next_cursor_oldest_or_newest_first(running: Running) -> None:
    seen: list[int] = []
    after = "0"
    while True:
        async with running.admin() as admin:
            r = await admin.get("/admin/audit", params={"after": after, "limit": "2"})
        body = r.json()
        seen += [e["seq"] for e in body["data"]]
        if body["next"] is None:
            break
        after = str(body["next"])
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 3
    before: str | None = None
    newest: list[int] = []
    while True:
        params = {"order": "desc", "limit": "2", **({"before": before} if before else {})}
        async with running.admin() as admin:
            body = (await admin.get("/admin/audit", params=params)).json()
        newest += [e["seq"] for e in body["data"]]
        if body["next"] is None:
            break
        before = str(body["next"])
    assert newest[-len(seen) :] == seen[::-1] and newest == sorted(newest, reverse=True)
    async with running.admin() as admin:
        for bad in (
            {"limit": "0"},
            {"after": "x"},
            {"before": "0"},
            {"order": "sideways"},
            {"since": "yesterday"},
            {"since": "2026-02-01", "until": "2026-01-01"},
        ):
            r = await admin.get("/admin/audit", params=bad)
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = await admin.get("/admin/audit", params={"since": "2999-01-01T00:00:00Z"})
        assert r.json()["data"] == []


async def test_a_tenant_key_or_no_token_gets_401(running: Running) -> None:
    for token in (running.acme.key, "", ADMIN_TOKEN + "x"):
        async with running.admin(token) as client:
            if not token:
                client.headers.pop("Authorization")
            for path in ("/admin/audit", "/admin/audit/verify"):
                r = await client.get(path)
                assert r.status_code == 401, (token, path, r.text)


async def test_verify_is_ok_through_the_api_and_the_cli(running: Running) -> None:
    async with running.admin() as admin:
        report = (await admin.get("/admin/audit/verify")).json()
    assert report["ok"] and report["problem"] is None and report["checked"] >= 3
    head = report["head"]
    url_args = ("--url", running.url, "--admin-token", ADMIN_TOKEN)
    result = await _cli("audit", "verify", "--head", head, *url_args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    listed = await _cli("audit", "list", "--action", "tenant.update", *url_args)
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["data"][0]["action"] == "tenant.update"


async def test_direct_cli_changes_are_recorded_as_the_os_user(running: Running) -> None:
    data_dir = str(running.service.settings.data_dir)
    result = await _cli(
        "tenant", "update", running.acme.id, "--status", "suspended", "--data-dir", data_dir
    )
    assert result.exit_code == 0, result.output
    [entry] = await _entries(running, action="tenant.update", target=running.acme.id)
    assert entry["actor"].startswith("cli:")
    assert entry["details"] == {"status": {"from": "active", "to": "suspended"}}
    verified = await _cli("audit", "verify", "--data-dir", data_dir)
    assert verified.exit_code == 0, verified.output


async def test_an_entry_edited_behind_the_triggers_is_named_by_verify(running: Running) -> None:
    data_dir = running.service.settings.data_dir
    [entry] = await _entries(running, action="tenant.update", target=running.globex.id)
    db = sqlite3.connect(data_dir / DATABASE_FILE)
    try:
        db.execute("DROP TRIGGER audit_log_no_update")
        db.execute(
            "UPDATE audit_log SET details = ? WHERE seq = ?",
            (json.dumps({"tier": {"from": "standard", "to": "free"}}), entry["seq"]),
        )
        db.commit()
    finally:
        db.close()
    result = await _cli("audit", "verify", "--data-dir", str(data_dir))
    assert result.exit_code == 1, result.output
    assert f"entry {entry['seq']} ({entry['id']}) was edited" in result.stderr
    async with running.admin() as admin:
        problem = (await admin.get("/admin/audit/verify")).json()["problem"]
    assert (problem["kind"], problem["seq"]) == ("edited", entry["seq"])
