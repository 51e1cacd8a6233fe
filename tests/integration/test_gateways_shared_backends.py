"""Several gateways on the production backends: three `tenantserve up` processes, each
with a data dir of its own (as on three machines), share one PostgreSQL database, one
Redis and one JetStream stream. Any of them serves any request; a tenant's hard quota
holds across them (within what the metered ledger's snapshot can miss); every admitted
request is counted exactly once in the usage every gateway reads."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import pytest_asyncio

from tenantserve.admission.quota_ledger_metered import DEFAULT_TTL_S
from tenantserve.bootstrap import open_tenancy
from tenantserve.config import Settings
from tests.helpers.databases import drop_postgres_database, fresh_postgres_database
from tests.helpers.gateways import Gateway, gateways_running, wait_healthy
from tests.helpers.server import TenantKey, add_tenant
from tests.helpers.services import NATS_URL, REDIS_URL, require_service

GATEWAYS = 3
COUNTED_REQUESTS = 60
QUOTA = 24
QUOTA_REQUESTS = 48
# The quota phase's pace: the metered ledger's snapshot (DEFAULT_TTL_S) plus the metering
# pipeline's lag can miss this many seconds of the other gateways' traffic.
QUOTA_RATE_PER_S = 4.0
MISSABLE_S = DEFAULT_TTL_S + 1.0

pytestmark = [pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stream() -> AsyncIterator[str]:
    require_service("NATS", "127.0.0.1", 4222)
    name = f"TS_GATEWAYS_{secrets.token_hex(4).upper()}"
    yield name
    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


class Cluster:
    def __init__(self, gateways: list[Gateway], counted: TenantKey, capped: TenantKey) -> None:
        self.gateways = gateways
        self.counted = counted
        self.capped = capped


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    database_url: str,
    stream: str,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    require_service("Redis", "127.0.0.1", 6379)
    data_dir = tmp_path_factory.mktemp("gateways")
    tenancy = await open_tenancy(Settings(data_dir=data_dir, database_url=database_url))
    try:
        counted = await add_tenant(tenancy.service, "counted", tier="standard")
        capped = await add_tenant(tenancy.service, "capped", tier="standard")
        await tenancy.service.update_tenant(
            capped.id,
            quotas=[{"metric": "requests", "period": "day", "limit": QUOTA, "enforcement": "hard"}],
        )
        for t in (counted, capped):
            await tenancy.service.update_tenant(
                t.id, limits={"requests_per_minute": 10_000, "max_concurrent": 100}
            )
    finally:
        await tenancy.db.dispose()
    settings = {
        "TENANTSERVE_DATABASE_URL": database_url,
        "TENANTSERVE_REDIS_URL": REDIS_URL,
        "TENANTSERVE_NATS_URL": NATS_URL,
        "TENANTSERVE_NATS_STREAM": stream,
    }
    with gateways_running(data_dir, tiny_model_dir, GATEWAYS, settings, own_data_dirs=True) as gws:
        await wait_healthy(gws)
        yield Cluster(gws, counted, capped)


def _body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def _usage_requests(client: httpx.AsyncClient, url: str, key: str) -> int:
    r = await client.get(f"{url}/v1/usage", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return int(r.json()["total"]["requests"])


async def _settled_usage(cluster: Cluster, key: str, expected: int) -> list[int]:
    """Each gateway's reading of the tenant's usage, once the first reaches `expected`
    (or 20 s pass), and two seconds more for anything counted twice to show up."""
    async with httpx.AsyncClient(timeout=10) as client:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if await _usage_requests(client, cluster.gateways[0].url, key) >= expected:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)
        return [await _usage_requests(client, g.url, key) for g in cluster.gateways]


async def test_any_gateway_serves_and_usage_is_counted_once(
    cluster: Cluster, tiny_model_dir: Path
) -> None:
    headers = {"authorization": f"Bearer {cluster.counted.key}"}
    urls = itertools.cycle(g.url for g in cluster.gateways)
    targets = [next(urls) for _ in range(COUNTED_REQUESTS)]
    gate = asyncio.Semaphore(6)

    async def one(client: httpx.AsyncClient, url: str) -> httpx.Response:
        async with gate:
            return await client.post(
                f"{url}/v1/chat/completions", json=_body(tiny_model_dir.name), headers=headers
            )

    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(*(one(client, url) for url in targets))
    assert [r.status_code for r in responses] == [200] * COUNTED_REQUESTS, [
        r.text[:200] for r in responses if r.status_code != 200
    ]
    served_by = Counter(targets)
    assert sorted(served_by.values()) == [COUNTED_REQUESTS // GATEWAYS] * GATEWAYS
    readings = await _settled_usage(cluster, cluster.counted.key, COUNTED_REQUESTS)
    print(f"\nusage requests as each gateway reads it: {readings} (sent {COUNTED_REQUESTS})")
    assert readings == [COUNTED_REQUESTS] * GATEWAYS


async def test_a_hard_quota_holds_across_gateways(cluster: Cluster, tiny_model_dir: Path) -> None:
    headers = {"authorization": f"Bearer {cluster.capped.key}"}
    urls = itertools.cycle(g.url for g in cluster.gateways)
    statuses: list[int] = []
    codes: Counter[str] = Counter()
    interval = 1.0 / QUOTA_RATE_PER_S
    async with httpx.AsyncClient(timeout=60) as client:
        started = time.monotonic()
        for i in range(QUOTA_REQUESTS):
            await asyncio.sleep(max(0.0, started + i * interval - time.monotonic()))
            r = await client.post(
                f"{next(urls)}/v1/chat/completions",
                json=_body(tiny_model_dir.name),
                headers=headers,
            )
            statuses.append(r.status_code)
            if r.status_code != 200:
                codes[r.json()["error"]["code"]] += 1
    admitted = statuses.count(200)
    ceiling = QUOTA + QUOTA_RATE_PER_S * MISSABLE_S
    print(f"\nadmitted {admitted} of {QUOTA_REQUESTS} (quota {QUOTA}, ceiling {ceiling}); {codes}")
    assert set(codes) <= {"quota_exceeded"}, codes
    assert QUOTA <= admitted <= ceiling
    # Once spent, the quota stays spent on every gateway.
    assert statuses[-GATEWAYS:] == [429] * GATEWAYS
    readings = await _settled_usage(cluster, cluster.capped.key, admitted)
    assert readings == [admitted] * GATEWAYS
