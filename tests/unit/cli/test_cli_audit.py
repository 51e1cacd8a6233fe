"""Direct-mode commands on a temporary data dir are recorded in the audit log as
`cli:<OS user>`, and `tenantserve audit list|verify` read it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from tenantserve.cli.main import app
from tenantserve.cli.runner import cli_actor

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


def test_direct_commands_are_audited_as_the_os_user_without_secrets(tmp_path: Path) -> None:
    tenant = _ok(tmp_path, "tenant", "create", "--name", "a", "--tier", "free", "--region", "us")
    _ok(tmp_path, "tenant", "update", tenant["id"], "--tier", "premium")
    key = _ok(tmp_path, "key", "create", "--tenant", tenant["id"])
    _ok(tmp_path, "key", "revoke", key["id"])
    _ok(tmp_path, "credit", "grant", "--tenant", tenant["id"], "--amount", "5", "--reason", "x")
    page = _ok(tmp_path, "audit", "list")
    assert [e["action"] for e in page["data"]] == [
        "tenant.create",
        "tenant.update",
        "key.create",
        "key.revoke",
        "credit.grant",
    ]
    assert {e["actor"] for e in page["data"]} == {cli_actor()}
    assert cli_actor().startswith("cli:")
    assert page["data"][1]["details"] == {"tier": {"from": "free", "to": "premium"}}
    assert key["key"] not in json.dumps(page)
    assert page["next"] is None
    filtered = _ok(tmp_path, "audit", "list", "--target", key["id"], "--limit", "1")
    assert [e["action"] for e in filtered["data"]] == ["key.create"]
    assert filtered["next"] == filtered["data"][0]["seq"]
    newest = _ok(tmp_path, "audit", "list", "--newest-first", "--limit", "2")
    assert [e["action"] for e in newest["data"]] == ["credit.grant", "key.revoke"]
    older = _ok(tmp_path, "audit", "list", "--newest-first", "--before", str(newest["next"]))
    assert [e["action"] for e in older["data"]] == ["key.create", "tenant.update", "tenant.create"]
    assert _ok(tmp_path, "audit", "list", "--since", "2999-01-01")["data"] == []
    report = _ok(tmp_path, "audit", "verify", "--head", f"5:{page['data'][-1]['hash']}")
    assert report["ok"] and report["checked"] == 5


def test_verify_against_a_head_the_log_never_reached_exits_1(tmp_path: Path) -> None:
    _ok(tmp_path, "tenant", "create", "--name", "a", "--tier", "free", "--region", "us")
    result = _cli(tmp_path, "audit", "verify", "--head", "9:" + "0" * 64)
    assert result.exit_code == 1
    assert "truncated" in result.stderr and result.stderr.count("\n") == 1
    bad = _cli(tmp_path, "audit", "verify", "--head", "nonsense")
    assert bad.exit_code == 2 and "SEQ:HASH" in bad.stderr
    when = _cli(tmp_path, "audit", "list", "--since", "last tuesday")
    assert when.exit_code == 2 and "since must be an ISO 8601 time" in when.stderr
