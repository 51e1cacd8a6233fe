"""The production metering path on a real server: usage events leave through the outbox,
the shipper and NATS JetStream, and the aggregator counts them into the database — the
SDK's requests show up exactly once in `/v1/usage`. (Each test module has a stream of its
own, so nothing is shared with other runs.)"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy
from tenantserve.config import MeteringConfig
from tests.helpers.server import Running, add_tenant, serve, server_settings
from tests.helpers.services import NATS_URL, require_service

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def jetstream(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    require_service("NATS", "127.0.0.1", 4222)
    stream = f"TS_E2E_{secrets.token_hex(4).upper()}"
    settings = server_settings(tmp_path_factory.mktemp("data"), tiny_model_dir)
    settings = replace(settings, metering=MeteringConfig(nats_url=NATS_URL, stream=stream))
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme")
        globex = await add_tenant(tenancy.service, "globex")
    finally:
        await tenancy.db.dispose()
    try:
        async with serve(settings) as (url, service):
            yield Running(url=url, service=service, acme=acme, globex=globex)
    finally:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()


async def test_requests_are_counted_once_through_jetstream(jetstream: Running) -> None:
    client = jetstream.sdk()
    replies = await asyncio.gather(
        *(
            client.completions.create(model=jetstream.model, prompt=f"Hi {i}", max_tokens=3)
            for i in range(8)
        )
    )
    prompt = sum(r.usage.prompt_tokens for r in replies if r.usage)
    completion = sum(r.usage.completion_tokens for r in replies if r.usage)
    await jetstream.sdk(jetstream.globex.key).completions.create(
        model=jetstream.model, prompt="Hello", max_tokens=2
    )
    deadline = time.monotonic() + 10
    async with jetstream.http() as http:
        while True:
            total = (await http.get("/v1/usage")).json()["total"]
            if total["requests"] >= 8 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert total["requests"] == 8
    assert (total["input_tokens"], total["output_tokens"]) == (prompt, completion)
    async with jetstream.http(key=jetstream.globex.key) as http:
        for _ in range(200):
            theirs = (await http.get("/v1/usage")).json()["total"]
            if theirs["requests"]:
                break
            await asyncio.sleep(0.05)
    assert theirs["requests"] == 1
    await asyncio.sleep(0.3)  # nothing more arrives (no double count)
    async with jetstream.http() as http:
        assert (await http.get("/v1/usage")).json()["total"] == total
