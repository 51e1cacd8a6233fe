"""Request records over real HTTP: SDK requests show up in the caller's `/v1/requests` with
their TTFT and latency, never in another tenant's (whose lookups of them are 404s); a 429
is recorded with its code; operators read every record (audited); content only for a
tenant that opted in; `tenantserve debug request` tells a real request's story."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam
from typer.testing import CliRunner

from tenantserve.audit.repository import AuditQuery
from tenantserve.cli.main import app
from tests.helpers.server import ADMIN_TOKEN, Running, add_tenant

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
CLEAN_ENV = {
    "TENANTSERVE_URL": None,
    "TENANTSERVE_DATABASE_URL": None,
    "TENANTSERVE_ADMIN_TOKEN": None,
    "TENANTSERVE_DATA_DIR": None,
}


async def _record(running: Running, key: str, request_id: str) -> dict[str, Any]:
    """The caller's record of `request_id` once the writer stored it (fails after 5 s)."""
    deadline = time.monotonic() + 5
    async with running.http(key=key) as http:
        while True:
            r = await http.get(f"/v1/requests/{request_id}")
            if r.status_code == 200 or time.monotonic() > deadline:
                assert r.status_code == 200, r.text
                body: dict[str, Any] = r.json()
                return body
            await asyncio.sleep(0.05)


async def _chat(running: Running, key: str, max_tokens: int = 4) -> str:
    """One SDK chat completion; returns its request id."""
    sdk = running.sdk(key)
    reply = await sdk.chat.completions.with_raw_response.create(
        model=running.model, messages=HELLO, max_tokens=max_tokens
    )
    return str(reply.headers["x-request-id"])


async def test_sdk_requests_appear_in_the_callers_records_with_ttft_and_latency(
    running: Running,
) -> None:
    ids = [await _chat(running, running.acme.key) for _ in range(3)]
    record = await _record(running, running.acme.key, ids[-1])
    assert (record["tenant_id"], record["status"], record["pool"]) == (
        running.acme.id,
        "completed",
        "shared",
    )
    assert record["timings"]["ttft_ms"] > 0
    assert record["timings"]["total_ms"] >= record["timings"]["ttft_ms"]
    assert record["usage"]["completion_tokens"] > 0 and record["region"] == "us"
    assert "content" not in record  # never without the opt-in
    async with running.http() as http:
        r = await http.get("/v1/requests", params={"limit": 2})
        page = r.json()
        assert [x["id"] for x in page["data"]] == [ids[2], ids[1]]  # newest first
        r = await http.get("/v1/requests", params={"limit": 2, "cursor": page["next_cursor"]})
        assert ids[0] in [x["id"] for x in r.json()["data"]]


async def test_another_tenant_gets_404_and_never_sees_the_records(running: Running) -> None:
    rid = await _chat(running, running.acme.key)
    await _record(running, running.acme.key, rid)
    async with running.http(key=running.globex.key) as http:
        r = await http.get(f"/v1/requests/{rid}")
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "request_not_found"
        listed = (await http.get("/v1/requests", params={"limit": 1000})).json()["data"]
    assert all(x["tenant_id"] == running.globex.id for x in listed)
    assert rid not in {x["id"] for x in listed}


async def test_bad_parameters_are_openai_shaped_400s(running: Running) -> None:
    async with running.http() as http:
        for params, param in [
            ({"limit": "0"}, "limit"),
            ({"status": "weird"}, "status"),
            ({"start": "yesterday"}, "start"),
            ({"cursor": "!!"}, "cursor"),
        ]:
            r = await http.get("/v1/requests", params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["error"]["param"] == param


async def test_operators_read_any_record_and_each_read_is_audited(running: Running) -> None:
    rid = await _chat(running, running.acme.key)
    await _record(running, running.acme.key, rid)
    async with running.admin() as admin:
        one = await admin.get(f"/admin/requests/{rid}")
        listed = await admin.get("/admin/requests", params={"tenant": running.acme.id})
    assert one.status_code == 200 and one.json()["tenant_id"] == running.acme.id
    assert rid in {x["id"] for x in listed.json()["data"]}
    async with running.http(key=running.acme.key) as http:
        assert (await http.get(f"/admin/requests/{rid}")).status_code == 401
    audit = running.service.tenancy.audit
    entries = (await audit.page(AuditQuery(action="requests.read"), limit=1000)).entries
    assert {rid, running.acme.id} <= {e.target for e in entries}


async def test_a_rate_limited_request_is_recorded_with_its_code(running: Running) -> None:
    tenant = await add_tenant(running.tenancy, "one-rpm-co")
    async with running.admin() as admin:
        r = await admin.patch(
            f"/admin/tenants/{tenant.id}", json={"limits": {"requests_per_minute": 1}}
        )
        assert r.status_code == 200
    body = {"model": running.model, "prompt": "Hi", "max_tokens": 1}
    async with running.http(key=tenant.key) as http:
        assert (await http.post("/v1/completions", json=body)).status_code == 200
        refused = await http.post("/v1/completions", json=body)
    assert refused.status_code == 429
    record = await _record(running, tenant.key, refused.headers["x-request-id"])
    assert (record["status"], record["http_status"], record["error_code"]) == (
        "rejected",
        429,
        "rate_limit_exceeded",
    )
    assert record["failed"] is False


async def test_content_is_kept_only_for_a_tenant_that_opted_in(running: Running) -> None:
    tenant = await add_tenant(running.tenancy, "opt-in-co")
    before = await _chat(running, tenant.key)
    assert "content" not in await _record(running, tenant.key, before)
    async with running.admin() as admin:
        r = await admin.patch(f"/admin/tenants/{tenant.id}", json={"log_content": True})
    assert r.status_code == 200 and r.json()["log_content"] is True
    after = await _chat(running, tenant.key)
    content = (await _record(running, tenant.key, after))["content"]
    assert content["prompt"] == "user: Say hello."
    assert content["completion"]
    async with running.admin() as admin:
        await admin.patch(f"/admin/tenants/{tenant.id}", json={"log_content": False})
    off = await _chat(running, tenant.key)
    assert "content" not in await _record(running, tenant.key, off)


async def test_slo_status_is_served_for_the_tenant_and_operators(running: Running) -> None:
    rid = await _chat(running, running.acme.key)
    await _record(running, running.acme.key, rid)
    async with running.http() as http:
        own = (await http.get("/v1/slo")).json()
    assert own["tenant_id"] == running.acme.id and own["ttft"]["target_p95_ms"] == 2000.0
    assert own["availability"]["target"] == 0.995 and own["ttft"]["p95_ms_1h"] > 0
    assert own["ttft"]["p50_ms_24h"] > 0 and own["ttft"]["samples_24h"] >= 1
    async with running.admin() as admin:
        everyone = (await admin.get("/admin/slo")).json()["data"]
    assert running.acme.id in {s["tenant_id"] for s in everyone}


async def test_debug_request_tells_a_real_requests_story(running: Running) -> None:
    rid = await _chat(running, running.acme.key)
    await _record(running, running.acme.key, rid)
    argv = ["debug", "request", rid, "--url", running.url, "--admin-token", ADMIN_TOKEN]
    deadline = time.monotonic() + 5
    while True:  # the usage event is metered a moment after the response
        result = await asyncio.to_thread(CliRunner().invoke, app, argv, env=CLEAN_ENV)
        assert result.exit_code == 0, result.output
        if "no usage event" not in result.stdout or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    out = result.stdout
    for fact in (rid, running.acme.id, "admitted", "queue wait", "TTFT", "prefill", "decode"):
        assert fact in out, out
    assert "usage     ue_" in out and "verdict" in out
    as_json = await asyncio.to_thread(CliRunner().invoke, app, [*argv, "--json"], env=CLEAN_ENV)
    assert '"object": "request.story"' in as_json.stdout
