"""Tenants against each other and against the gateway's guards, over real HTTP.

Every `/v1` endpoint refuses missing, wrong, revoked and expired credentials (401) and a
suspended tenant (403); a key's model scope and the tenant's region are enforced at
admission (403) and reflected in `/v1/models`; prefix-cache entries never cross tenants;
per-tenant limits, set through the admin API, take effect at once (429 + Retry-After).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import jwt
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.helpers.server import JWT_SECRET, MAX_BODY_BYTES, Running, add_tenant

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there!"}]


def _endpoints(model: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every /v1 endpoint with a valid body."""
    return [
        ("GET", "/v1/models", None),
        ("GET", f"/v1/models/{model}", None),
        ("POST", "/v1/chat/completions", {"model": model, "messages": HELLO, "max_tokens": 1}),
        ("POST", "/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 1}),
        ("GET", "/v1/usage", None),
        ("GET", "/v1/invoices", None),
    ]


ENDPOINTS = len(_endpoints("any"))


async def _statuses(running: Running, key: str) -> list[tuple[int, str | None]]:
    """(status, error code) of every /v1 endpoint called with `key`."""
    out = []
    async with running.http(key=key) as http:
        for method, path, body in _endpoints(running.model):
            r = await http.request(method, path, json=body)
            assert r.headers["x-request-id"].startswith("req_")
            code = r.json()["error"]["code"] if r.status_code >= 400 else None
            out.append((r.status_code, code))
    return out


def _jwt(tenant_id: str, exp_offset_s: float) -> str:
    claims = {
        "tenant_id": tenant_id,
        "sub": "user-1",
        "aud": "tenantserve",
        "exp": int(time.time() + exp_offset_s),
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def test_every_v1_endpoint_serves_a_valid_key_and_a_valid_jwt(running: Running) -> None:
    assert await _statuses(running, running.acme.key) == [(200, None)] * ENDPOINTS
    assert await _statuses(running, _jwt(running.acme.id, 300)) == [(200, None)] * ENDPOINTS


async def test_bad_credentials_are_a_401_on_every_v1_endpoint(running: Running) -> None:
    revoked = await add_tenant(running.tenancy, "revoked-key-co")
    assert (await _statuses(running, revoked.key))[0] == (200, None)  # now cached
    async with running.admin() as admin:
        assert (await admin.delete(f"/admin/keys/{revoked.key_id}")).status_code == 200
    expired = await add_tenant(running.tenancy, "expired-key-co", expires_days=1e-6)
    await asyncio.sleep(0.2)  # 1e-6 days is 86 ms
    last = running.acme.key[-1]
    wrong_secret = running.acme.key[:-1] + ("y" if last != "y" else "z")
    for key in (
        "",  # no Authorization header at all
        "sk-not-a-tenantserve-key",
        "ts-abc-def",
        wrong_secret,
        revoked.key,
        expired.key,
        _jwt(running.acme.id, -60),  # expired JWT
        jwt.encode({"tenant_id": running.acme.id, "aud": "tenantserve", "exp": 2**31}, "x" * 40),
    ):
        assert await _statuses(running, key) == [(401, "invalid_api_key")] * ENDPOINTS, key
    with pytest.raises(openai.AuthenticationError):
        await running.sdk(key=revoked.key).chat.completions.create(
            model=running.model, messages=HELLO, max_tokens=1
        )


async def test_a_suspended_tenant_is_a_403_at_once_and_back_when_reactivated(
    running: Running,
) -> None:
    tenant = await add_tenant(running.tenancy, "suspended-co")
    assert (await _statuses(running, tenant.key))[0] == (200, None)
    async with running.admin() as admin:
        r = await admin.patch(f"/admin/tenants/{tenant.id}", json={"status": "suspended"})
        assert r.status_code == 200
        assert await _statuses(running, tenant.key) == [(403, "tenant_suspended")] * ENDPOINTS
        with pytest.raises(openai.PermissionDeniedError):
            await running.sdk(key=tenant.key).models.list()
        await admin.patch(f"/admin/tenants/{tenant.id}", json={"status": "active"})
    assert await _statuses(running, tenant.key) == [(200, None)] * ENDPOINTS


async def test_the_prefix_cache_is_never_shared_between_tenants(running: Running) -> None:
    # A text prompt (no chat template) that starts with something unique: nothing of it
    # can be in the cache before this test.
    prompt = f"{uuid.uuid4()} a repeated long question: " + "why? " * 20

    async def cached_tokens(key: str) -> int:
        completion = await running.sdk(key=key).completions.create(
            model=running.model, prompt=prompt, max_tokens=2, temperature=0
        )
        assert completion.usage is not None
        details = completion.usage.prompt_tokens_details
        assert details is not None and details.cached_tokens is not None
        return details.cached_tokens

    assert await cached_tokens(running.acme.key) == 0
    assert await cached_tokens(running.acme.key) >= 16
    assert await cached_tokens(running.globex.key) == 0
    assert await cached_tokens(running.globex.key) >= 16


async def test_a_key_scoped_to_other_models_is_a_403_and_hides_the_model(
    running: Running,
) -> None:
    other = await running.tenancy.create_key(running.acme.id, allowed_models=["another-model"])
    sdk = running.sdk(key=other.plaintext)
    with pytest.raises(openai.PermissionDeniedError) as e:
        await sdk.chat.completions.create(model=running.model, messages=HELLO, max_tokens=1)
    assert e.value.code == "model_not_allowed"
    assert (await sdk.models.list()).data == []
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve(running.model)
    scoped = await running.tenancy.create_key(running.acme.id, allowed_models=[running.model])
    models = await running.sdk(key=scoped.plaintext).models.list()
    assert [m.id for m in models.data] == [running.model]


async def test_a_tenant_of_another_region_is_refused_with_region_mismatch(
    running: Running,
) -> None:
    eu = await add_tenant(running.tenancy, "eu-co", region="eu")
    sdk = running.sdk(key=eu.key)
    for create in (
        sdk.chat.completions.create(model=running.model, messages=HELLO, max_tokens=1),
        sdk.completions.create(model=running.model, prompt="Hi", max_tokens=1),
    ):
        with pytest.raises(openai.PermissionDeniedError) as e:
            await create
        assert e.value.code == "region_mismatch"
    assert (await sdk.models.list()).data == []


async def test_tiny_per_tenant_limits_turn_the_third_request_into_a_429(
    running: Running,
) -> None:
    tenant = await add_tenant(running.tenancy, "tiny-limits-co")
    async with running.admin() as admin:
        r = await admin.patch(
            f"/admin/tenants/{tenant.id}", json={"limits": {"requests_per_minute": 2}}
        )
    assert r.json()["limits"] == {"requests_per_minute": 2}
    body = {"model": running.model, "prompt": "Hi", "max_tokens": 1}
    async with running.http(key=tenant.key) as http:
        first, second, third = [await http.post("/v1/completions", json=body) for _ in range(3)]
    assert (first.status_code, second.status_code) == (200, 200)
    assert third.status_code == 429, third.text
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert "requests per minute" in third.json()["error"]["message"]
    assert 1 <= int(third.headers["Retry-After"]) <= 60
    # Another tenant is not limited by it.
    async with running.http(key=running.globex.key) as http:
        assert (await http.post("/v1/completions", json=body)).status_code == 200


async def test_a_body_above_the_limit_is_a_413(running: Running) -> None:
    big = {"model": running.model, "prompt": "x" * (MAX_BODY_BYTES + 1)}

    async def chunked() -> Any:
        yield b'{"model": "m", "prompt": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    async with running.http() as http:
        declared = await http.post("/v1/completions", json=big)
        streamed = await http.post("/v1/completions", content=chunked())
    async with running.http(key="") as anonymous:
        before_auth = await anonymous.post("/v1/chat/completions", json=big)
    for r in (declared, streamed, before_auth):
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "request_too_large"
        assert r.headers["x-request-id"].startswith("req_")
    assert "content-length" not in {k.lower() for k in streamed.request.headers}


async def test_concurrent_tenants_each_get_their_own_completion(
    running: Running,
) -> None:
    async with running.http() as acme, running.http(key=running.globex.key) as globex:
        body = {"model": running.model, "prompt": "Once", "max_tokens": 3, "temperature": 0}
        a, g = await asyncio.gather(
            acme.post("/v1/completions", json=body), globex.post("/v1/completions", json=body)
        )
    assert a.status_code == g.status_code == 200
    assert a.json()["id"] != g.json()["id"]
    assert a.json()["choices"][0]["text"] == g.json()["choices"][0]["text"]
