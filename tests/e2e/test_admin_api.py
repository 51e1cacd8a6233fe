"""The admin API over real HTTP: the admin token guards every endpoint, and tenants and
keys round-trip in the JSON of `tenancy/views.py` (what the CLI prints)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers.server import ADMIN_TOKEN, Running

pytestmark = pytest.mark.asyncio(loop_scope="module")

TENANT_FIELDS = {
    "id", "name", "tier", "region", "status", "limits", "quotas", "log_content", "pool",
    "created_at",
}  # fmt: skip
MONTH_TOKENS = {"metric": "tokens", "period": "month", "limit": 1_000_000, "enforcement": "hard"}
DAY_REQUESTS = {"metric": "requests", "period": "day", "limit": 500, "enforcement": "soft"}
KEY_FIELDS = {
    "id",
    "tenant_id",
    "prefix",
    "allowed_models",
    "created_at",
    "expires_at",
    "revoked_at",
}


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert response.headers["x-request-id"].startswith("req_")
    return dict(error)


async def test_admin_endpoints_refuse_no_token_a_wrong_token_and_a_tenant_key(
    running: Running,
) -> None:
    tenant_id, key_id = running.acme.id, running.acme.key_id
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/admin/tenants", {"name": "x", "tier": "free", "region": "us"}),
        ("GET", "/admin/tenants", None),
        ("GET", f"/admin/tenants/{tenant_id}", None),
        ("PATCH", f"/admin/tenants/{tenant_id}", {"status": "suspended"}),
        ("POST", f"/admin/tenants/{tenant_id}/keys", {}),
        ("GET", f"/admin/tenants/{tenant_id}/keys", None),
        ("DELETE", f"/admin/keys/{key_id}", None),
        ("GET", "/admin/events", None),
    ]
    for token in ("", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], running.acme.key):
        async with running.admin(token) as admin:
            if not token:
                admin.headers.pop("Authorization")
            for method, path, body in calls:
                r = await admin.request(method, path, json=body)
                assert _error(r, 401)["code"] == "invalid_api_key", (token, method, path)
    # Nothing changed: acme is active and its key works.
    async with running.http() as http:
        assert (await http.get("/v1/models")).status_code == 200


async def test_tenants_and_keys_round_trip_through_the_admin_api(running: Running) -> None:
    async with running.admin() as admin:
        r = await admin.post(
            "/admin/tenants", json={"name": "initech", "tier": "free", "region": "us"}
        )
        assert r.status_code == 201, r.text
        tenant = r.json()
        assert set(tenant) == TENANT_FIELDS
        assert tenant["id"].startswith("ten_")
        assert (tenant["name"], tenant["tier"], tenant["region"]) == ("initech", "free", "us")
        assert (tenant["status"], tenant["limits"], tenant["quotas"]) == ("active", {}, [])

        listed = (await admin.get("/admin/tenants")).json()["data"]
        assert tenant in listed
        assert {running.acme.id, running.globex.id} <= {t["id"] for t in listed}
        assert (await admin.get(f"/admin/tenants/{tenant['id']}")).json() == tenant

        r = await admin.patch(
            f"/admin/tenants/{tenant['id']}",
            json={"tier": "premium", "region": "eu", "limits": {"tokens_per_minute": 5000}},
        )
        patched = r.json()
        assert r.status_code == 200, r.text
        assert (patched["tier"], patched["region"]) == ("premium", "eu")
        assert patched["limits"] == {"tokens_per_minute": 5000}
        reset = {"region": "us", "limits": {"tokens_per_minute": None}}
        r = await admin.patch(f"/admin/tenants/{tenant['id']}", json=reset)
        assert r.json()["limits"] == {} and r.json()["region"] == "us"

        r = await admin.post(
            f"/admin/tenants/{tenant['id']}/keys",
            json={"expires_days": 30, "allowed_models": [running.model]},
        )
        assert r.status_code == 201, r.text
        key = r.json()
        assert set(key) == KEY_FIELDS | {"key"}
        assert key["tenant_id"] == tenant["id"] and key["allowed_models"] == [running.model]
        assert key["expires_at"] is not None and key["revoked_at"] is None
        assert key["key"].startswith(key["prefix"])
        keys = (await admin.get(f"/admin/tenants/{tenant['id']}/keys")).json()["data"]
        assert [k["id"] for k in keys] == [key["id"]] and "key" not in keys[0]

        # The new key works at once, as the tenant's tier says.
        async with running.http(key=key["key"]) as http:
            models = (await http.get("/v1/models")).json()["data"]
            assert [m["id"] for m in models] == [running.model]

            r = await admin.delete(f"/admin/keys/{key['id']}")
            assert r.status_code == 200
            revoked = r.json()
            assert set(revoked) == KEY_FIELDS and revoked["revoked_at"] is not None
            again = await admin.delete(f"/admin/keys/{key['id']}")
            assert again.json()["revoked_at"] == revoked["revoked_at"]  # idempotent
            _error(await http.get("/v1/models"), 401)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/tenants", {"name": "x", "tier": "gold", "region": "us"}),
        ("POST", "/admin/tenants", {"name": "x", "tier": "free", "region": "mars"}),
        ("POST", "/admin/tenants", {"name": "  ", "tier": "free", "region": "us"}),
        ("POST", "/admin/tenants", {"name": "x", "tier": "free"}),
        ("POST", "/admin/tenants", {"name": "x", "tier": "free", "region": "us", "plan": 1}),
        ("PATCH", "/admin/tenants/{acme}", {"status": "deleted"}),
        ("PATCH", "/admin/tenants/{acme}", {"limits": {"requests_per_minute": -1}}),
        ("PATCH", "/admin/tenants/{acme}", {"limits": {"requests_per_hour": 5}}),
        ("PATCH", "/admin/tenants/{acme}", {"limits": {"requests_per_minute": "many"}}),
        ("PATCH", "/admin/tenants/{acme}", {"quotas": [{**MONTH_TOKENS, "metric": "gpus"}]}),
        ("PATCH", "/admin/tenants/{acme}", {"quotas": [{**MONTH_TOKENS, "period": "week"}]}),
        ("PATCH", "/admin/tenants/{acme}", {"quotas": [{**MONTH_TOKENS, "limit": 0}]}),
        ("PATCH", "/admin/tenants/{acme}", {"quotas": [MONTH_TOKENS, MONTH_TOKENS]}),
        ("PATCH", "/admin/tenants/{acme}", {"quotas": MONTH_TOKENS}),
        ("POST", "/admin/tenants/{acme}/keys", {"expires_days": 0}),
        ("POST", "/admin/tenants/{acme}/keys", {"allowed_models": [""]}),
        ("POST", "/admin/tenants", b"{not json"),
    ],
)
async def test_bad_admin_fields_are_a_400(
    running: Running, method: str, path: str, body: dict[str, Any] | bytes
) -> None:
    path = path.format(acme=running.acme.id)
    async with running.admin() as admin:
        if isinstance(body, bytes):
            r = await admin.request(method, path, content=body)
        else:
            r = await admin.request(method, path, json=body)
    assert _error(r, 400)["type"] == "invalid_request_error"
    async with running.admin() as admin:
        acme = (await admin.get(f"/admin/tenants/{running.acme.id}")).json()
    assert (acme["status"], acme["limits"], acme["quotas"]) == ("active", {}, [])


async def test_quotas_are_set_shown_and_replaced_through_the_admin_api(running: Running) -> None:
    async with running.admin() as admin:
        r = await admin.post(
            "/admin/tenants", json={"name": "quota-co", "tier": "standard", "region": "us"}
        )
        tenant_id = r.json()["id"]
        r = await admin.patch(
            f"/admin/tenants/{tenant_id}", json={"quotas": [MONTH_TOKENS, DAY_REQUESTS]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["quotas"] == [MONTH_TOKENS, DAY_REQUESTS]
        shown = (await admin.get(f"/admin/tenants/{tenant_id}")).json()
        assert shown["quotas"] == [MONTH_TOKENS, DAY_REQUESTS]
        listed = (await admin.get("/admin/tenants")).json()["data"]
        assert shown in listed

        r = await admin.patch(f"/admin/tenants/{tenant_id}", json={"tier": "premium"})
        assert r.json()["quotas"] == [MONTH_TOKENS, DAY_REQUESTS]  # untouched

        unknown = await admin.patch(
            f"/admin/tenants/{tenant_id}", json={"quotas": [{**DAY_REQUESTS, "metric": "gpus"}]}
        )
        error = _error(unknown, 400)
        assert error["type"] == "invalid_request_error"
        assert "requests, tokens, prompt_tokens, completion_tokens" in error["message"]
        duplicate = await admin.patch(
            f"/admin/tenants/{tenant_id}",
            json={"quotas": [DAY_REQUESTS, {**DAY_REQUESTS, "limit": 1}]},
        )
        assert "more than one quota" in _error(duplicate, 400)["message"]
        shown = (await admin.get(f"/admin/tenants/{tenant_id}")).json()
        assert shown["quotas"] == [MONTH_TOKENS, DAY_REQUESTS]

        r = await admin.patch(f"/admin/tenants/{tenant_id}", json={"quotas": []})
        assert r.json()["quotas"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/tenants/ten_nosuchtenant", None),
        ("PATCH", "/admin/tenants/ten_nosuchtenant", {"tier": "free"}),
        ("POST", "/admin/tenants/ten_nosuchtenant/keys", {}),
        ("GET", "/admin/tenants/ten_nosuchtenant/keys", None),
        ("DELETE", "/admin/keys/key_nosuchkey", None),
    ],
)
async def test_unknown_ids_are_a_404(
    running: Running, method: str, path: str, body: dict[str, Any] | None
) -> None:
    async with running.admin() as admin:
        r = await admin.request(method, path, json=body)
    assert _error(r, 404)["code"] == "not_found"


async def test_the_operator_event_log_is_served_to_the_admin(running: Running) -> None:
    async with running.admin() as admin:
        r = await admin.get("/admin/events")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and isinstance(body["data"], list)
