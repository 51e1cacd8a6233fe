"""The tenant's own account over real HTTP: `/v1/me` (the tenant, its credential and each
quota's use this period), `/v1/keys` (create, list, revoke; only with an unscoped key of
the tenant; another tenant's key id is 404), and `/v1/spend` (the open period priced now,
the same amount an invoice generated now says). Bad input is an OpenAI-shaped 400, never
a 5xx."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.helpers.server import JWT_SECRET, Running, add_tenant

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
KEY_FIELDS = {
    "id",
    "tenant_id",
    "prefix",
    "allowed_models",
    "created_at",
    "expires_at",
    "revoked_at",
}


def _jwt(tenant_id: str) -> str:
    claims = {
        "tenant_id": tenant_id,
        "sub": "user-1",
        "aud": "tenantserve",
        "exp": int(time.time()) + 300,
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _assert_openai_error(body: dict[str, Any], param: str | None = None) -> None:
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param


async def _chat(running: Running, key: str, n: int) -> None:
    sdk = running.sdk(key)
    for _ in range(n):
        await sdk.chat.completions.create(model=running.model, messages=HELLO, max_tokens=4)


async def test_me_shows_the_tenant_its_credential_and_each_quotas_use(running: Running) -> None:
    initech = await add_tenant(running.tenancy, "initech")
    quotas = [
        {"metric": "requests", "period": "day", "limit": 100, "enforcement": "hard"},
        {"metric": "tokens", "period": "month", "limit": 10_000, "enforcement": "soft"},
    ]
    async with running.admin() as admin:
        r = await admin.patch(f"/admin/tenants/{initech.id}", json={"quotas": quotas})
        assert r.status_code == 200, r.text
    await _chat(running, initech.key, 2)
    deadline = time.monotonic() + 5
    async with running.http(key=initech.key) as http:
        while True:
            me = (await http.get("/v1/me")).json()
            if me["quotas"][0]["used"] >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert me["object"] == "tenant"
    assert (me["id"], me["name"], me["tier"], me["status"]) == (
        initech.id,
        "initech",
        "standard",
        "active",
    )
    assert me["credential"] == {
        "type": "api_key", "key_id": initech.key_id, "subject": None, "allowed_models": []
    }  # fmt: skip
    requests_quota, tokens_quota = me["quotas"]
    assert {k: requests_quota[k] for k in quotas[0]} == quotas[0]
    assert requests_quota["used"] == 2
    assert 0 < tokens_quota["used"] <= 10_000
    async with running.http(key=_jwt(initech.id)) as http:
        me = (await http.get("/v1/me")).json()
    assert me["credential"]["type"] == "jwt" and me["credential"]["subject"] == "user-1"


async def test_a_key_is_created_listed_and_revoked_and_then_refused(running: Running) -> None:
    async with running.http() as http:
        r = await http.post("/v1/keys", json={"expires_days": 7, "allowed_models": [running.model]})
        assert r.status_code == 201, r.text
        created = r.json()
        assert set(created) == KEY_FIELDS | {"key"}
        assert created["key"].startswith(created["prefix"] + "-")
        assert created["allowed_models"] == [running.model] and created["expires_at"]
        listed = (await http.get("/v1/keys")).json()["data"]
        mine = [k for k in listed if k["id"] == created["id"]]
        assert mine and "key" not in mine[0] and set(mine[0]) == KEY_FIELDS
        assert all(k["tenant_id"] == running.acme.id for k in listed)
    async with running.http(key=created["key"]) as new:
        assert (await new.get("/v1/models")).status_code == 200
        async with running.http() as http:
            r = await http.delete(f"/v1/keys/{created['id']}")
            assert r.status_code == 200 and r.json()["revoked_at"]
        r = await new.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["message"]


async def test_another_tenants_keys_do_not_exist_for_it(running: Running) -> None:
    async with running.http() as acme, running.http(key=running.globex.key) as globex:
        acme_key = (await acme.post("/v1/keys", json={})).json()
        r = await globex.delete(f"/v1/keys/{acme_key['id']}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
        r = await globex.delete(f"/v1/keys/{running.acme.key_id}")
        assert r.status_code == 404
        listed = (await globex.get("/v1/keys")).json()["data"]
        assert [k["id"] for k in listed] == [running.globex.key_id]
        assert (await acme.delete("/v1/keys/key_doesnotexist")).status_code == 404
        # acme's keys still work
        r = await acme.get("/v1/keys")
        assert acme_key["id"] in {k["id"] for k in r.json()["data"]}


async def test_a_model_scoped_key_and_a_jwt_cannot_manage_keys(running: Running) -> None:
    async with running.http() as acme:
        scoped = (await acme.post("/v1/keys", json={"allowed_models": [running.model]})).json()
    for credential in (scoped["key"], _jwt(running.acme.id)):
        async with running.http(key=credential) as http:
            answers = [
                await http.get("/v1/keys"),
                await http.post("/v1/keys", json={}),
                await http.delete(f"/v1/keys/{running.acme.key_id}"),
            ]
            assert (await http.get("/v1/me")).status_code == 200
        for r in answers:
            assert r.status_code == 403, r.text
            assert "unscoped API key" in r.json()["error"]["message"]
    async with running.http() as acme:
        listed = {k["id"]: k for k in (await acme.get("/v1/keys")).json()["data"]}
    assert listed[running.acme.key_id]["revoked_at"] is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"expires_days": -1}, "expires_days"),
        ({"expires_days": 0}, "expires_days"),
        ({"expires_days": "soon"}, "expires_days"),
        ({"bogus": 1}, "bogus"),
        ({"allowed_models": "all"}, "allowed_models"),
        ([1, 2], None),
    ],
)
async def test_bad_key_input_is_an_openai_400(
    running: Running, body: object, param: str | None
) -> None:
    async with running.http() as http:
        r = await http.post("/v1/keys", json=body)
    assert r.status_code == 400, r.text
    _assert_openai_error(r.json(), param)


async def test_a_body_that_is_not_json_is_a_400(running: Running) -> None:
    async with running.http() as http:
        r = await http.post(
            "/v1/keys", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert r.status_code == 400
    _assert_openai_error(r.json())


async def test_spend_prices_the_open_period_like_an_invoice_generated_now(
    running: Running,
) -> None:
    umbrella = await add_tenant(running.tenancy, "umbrella")
    await _chat(running, umbrella.key, 2)
    deadline = time.monotonic() + 5
    async with running.http(key=umbrella.key) as http:
        while (await http.get("/v1/usage")).json()["total"]["requests"] < 2:
            assert time.monotonic() < deadline, "usage never counted the requests"
            await asyncio.sleep(0.1)
        spend = (await http.get("/v1/spend")).json()
        again = (await http.get("/v1/spend")).json()
        assert (await http.get("/v1/invoices")).json()["data"] == []  # nothing saved
    period = datetime.now(UTC).strftime("%Y-%m")
    assert spend["object"] == "spend_estimate" and spend["period"] == period
    assert spend["tenant_id"] == umbrella.id
    assert float(spend["usage_usd"]) > 0
    async with running.admin() as admin:
        r = await admin.post(
            "/admin/invoices/generate", json={"period": period, "tenant_id": umbrella.id}
        )
    invoice = r.json()["data"][0]
    usage_lines = [ln for ln in invoice["lines"] if ln["kind"] == "usage"]
    assert [ln for ln in spend["lines"] if ln["kind"] == "usage"] == usage_lines
    assert spend["usage_usd"] == again["usage_usd"]
    assert spend["total_usd"] == again["total_usd"]
    # The fee is prorated to the second: the invoice generated a moment later differs
    # from the estimate by at most a micro-dollar or so.
    assert abs(float(spend["total_usd"]) - float(invoice["total_usd"])) < 0.01
    async with running.http(key=running.globex.key) as globex:
        theirs = (await globex.get("/v1/spend")).json()
    assert theirs["tenant_id"] == running.globex.id and float(theirs["usage_usd"]) == 0
