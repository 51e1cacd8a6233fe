"""Moving a tenant from the shared pool (the built-in engine) to a dedicated pool (a
scripted upstream) under steady traffic: no request fails, requests started after the
move are served by the dedicated pool, usage counts every request exactly once and the
quota carries on. Then back to shared, and the move's refusals."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy
from tenantserve.pool_config import PoolConfig
from tests.helpers.server import ADMIN_TOKEN, TenantKey, add_tenant, serve, server_settings
from tests.helpers.upstream import FakeUpstream, running_upstream

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEDICATED = "dedicated-us"
QUOTA = {"metric": "requests", "period": "day", "limit": 100_000, "enforcement": "hard"}


@dataclass
class Setup:
    url: str
    model: str
    upstream: FakeUpstream
    mover: TenantKey  # premium
    other: TenantKey  # premium, never moved
    plain: TenantKey  # standard

    def http(self, who: TenantKey | None = None) -> httpx.AsyncClient:
        token = who.key if who is not None else ADMIN_TOKEN
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    settings = server_settings(tmp_path_factory.mktemp("data"), tiny_model_dir)
    tenancy = await open_tenancy(settings)
    try:
        mover = await add_tenant(tenancy.service, "mover", tier="premium")
        await tenancy.service.update_tenant(mover.id, quotas=[QUOTA])
        other = await add_tenant(tenancy.service, "other", tier="premium")
        plain = await add_tenant(tenancy.service, "plain")
    finally:
        await tenancy.db.dispose()
    model = tiny_model_dir.name
    async with running_upstream("dedicated") as upstream:
        pool = PoolConfig(DEDICATED, upstream.url, (model,), dedicated=True)
        async with serve(replace(settings, pools=(pool,))) as (url, _):
            yield Setup(url, model, upstream, mover, other, plain)


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@dataclass
class Sent:
    started: float
    status: int
    by_dedicated: bool


async def _steady_traffic(setup: Setup, stop: asyncio.Event, out: list[Sent]) -> None:
    """Three clients sending one request after another until `stop`."""

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            started = time.monotonic()
            r = await http.post("/v1/chat/completions", json=_chat(setup.model))
            text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else ""
            out.append(Sent(started, r.status_code, "upstream" in text))

    async with setup.http(setup.mover) as http:
        await asyncio.gather(*(client(http) for _ in range(3)))


async def _usage_requests(setup: Setup, expected: int) -> int:
    async with setup.http(setup.mover) as http:
        deadline = time.monotonic() + 10
        while True:
            total = int((await http.get("/v1/usage")).json()["total"]["requests"])
            if total >= expected or time.monotonic() > deadline:
                return total
            await asyncio.sleep(0.1)


async def test_a_tenant_moves_to_a_dedicated_pool_under_traffic_without_a_failure(
    setup: Setup,
) -> None:
    # Nobody is on the dedicated pool yet: it serves nobody.
    async with setup.http(setup.other) as http:
        r = await http.post("/v1/chat/completions", json=_chat(setup.model))
    assert r.status_code == 200 and "upstream" not in r.text
    assert setup.upstream.requests == []

    stop = asyncio.Event()
    sent: list[Sent] = []
    traffic = asyncio.create_task(_steady_traffic(setup, stop, sent))
    try:
        await asyncio.sleep(1.0)
        async with setup.http() as admin:
            r = await admin.post(f"/admin/tenants/{setup.mover.id}/move", json={"pool": DEDICATED})
        moved_at = time.monotonic()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await traffic
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["from_pool"] is None and report["to_pool"] == DEDICATED
    assert report["drained"] is True

    assert [s.status for s in sent] == [200] * len(sent)  # zero failed requests
    switched_at = moved_at - report["drain_s"]
    before = [s for s in sent if s.started < switched_at - 0.3]
    after = [s for s in sent if s.started > moved_at]
    assert before and not any(s.by_dedicated for s in before)
    assert after and all(s.by_dedicated for s in after)
    # Billing and quotas are the tenant's, not the pool's: every request once.
    assert await _usage_requests(setup, len(sent)) == len(sent)
    async with setup.http(setup.mover) as http:
        deadline = time.monotonic() + 5  # the quota ledger's snapshot refreshes each second
        while True:
            me = (await http.get("/v1/me")).json()
            if me["quotas"][0]["used"] >= len(sent) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert me["pool"] == DEDICATED
    assert me["quotas"][0]["used"] == len(sent)
    # The other premium tenant stays on the shared pool.
    served = len(setup.upstream.requests)
    async with setup.http(setup.other) as http:
        r = await http.post("/v1/chat/completions", json=_chat(setup.model))
    assert r.status_code == 200 and "upstream" not in r.text
    assert len(setup.upstream.requests) == served

    # And back to the shared pool.
    async with setup.http() as admin:
        r = await admin.post(f"/admin/tenants/{setup.mover.id}/move", json={"pool": None})
    assert r.status_code == 200, r.text
    assert r.json()["from_pool"] == DEDICATED
    async with setup.http(setup.mover) as http:
        r = await http.post("/v1/chat/completions", json=_chat(setup.model))
    assert r.status_code == 200 and "upstream" not in r.text
    async with setup.http() as admin:
        audit = (await admin.get("/admin/audit", params={"action": "tenant.move"})).json()
    assert [e["details"]["to_pool"] for e in audit["data"]] == [DEDICATED, None]


@pytest.mark.parametrize(
    ("who", "pool", "status", "code"),
    [
        ("plain", DEDICATED, 400, "tier_not_premium"),
        ("other", "no-such-pool", 404, "pool_not_found"),
        ("other", "shared", 400, None),
    ],
)
async def test_a_move_is_refused_with_the_reason(
    setup: Setup, who: str, pool: str, status: int, code: str | None
) -> None:
    tenant = getattr(setup, who)
    async with setup.http() as admin:
        r = await admin.post(f"/admin/tenants/{tenant.id}/move", json={"pool": pool})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == "pool"
    if code is not None:
        assert error["code"] == code


async def test_only_the_admin_token_moves_a_tenant(setup: Setup) -> None:
    async with setup.http(setup.mover) as http:
        r = await http.post(f"/admin/tenants/{setup.mover.id}/move", json={"pool": DEDICATED})
    assert r.status_code == 401
    assert r.json()["error"]["message"]
    async with setup.http() as admin:
        r = await admin.post(f"/admin/tenants/{setup.mover.id}/move", json={"pool": 3})
        unknown = await admin.post("/admin/tenants/ten_nope/move", json={"pool": DEDICATED})
    assert r.status_code == 400
    assert unknown.status_code == 404


async def _cli(*args: str) -> tuple[int, str, str]:
    command = Path(sys.executable).parent / "tenantserve"
    process = await asyncio.create_subprocess_exec(
        str(command), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_moves_a_tenant_through_the_admin_api(setup: Setup, tmp_path: Path) -> None:
    server = ("--url", setup.url, "--admin-token", ADMIN_TOKEN)
    code, out, err = await _cli("tenant", "move", setup.mover.id, "--to-pool", DEDICATED, *server)
    assert code == 0, err
    assert json.loads(out)["to_pool"] == DEDICATED
    code, out, err = await _cli("tenant", "move", setup.mover.id, "--to-shared", *server)
    assert code == 0, err
    assert json.loads(out)["from_pool"] == DEDICATED and json.loads(out)["to_pool"] is None
    # Without a server there is no gateway to warm and drain: the error says what to do.
    code, _, err = await _cli(
        "tenant", "move", setup.mover.id, "--to-shared", "--data-dir", str(tmp_path)
    )
    assert code == 2 and "--url" in err
    code, _, err = await _cli("tenant", "move", setup.mover.id, *server)
    assert code == 2 and "--to-pool" in err
