"""The built-in engine on Ray Serve (`--engine ray`) behind a real server: one local Ray
(`ray.init(num_cpus=2)`) for the module, the shared pool as a deployment of two replicas
of the tiny model and a dedicated pool `gold` with none. Requests are served through the
SDK, an adapter's sequential requests stay on the replica that has it multiplexed, a
killed replica fails its in-flight request with an OpenAI-shaped error (metered as an
error) and is replaced by Serve, and a tenant moved onto `gold` under steady traffic
brings its replica up (no failed request), then lets it go back to zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from tenantserve.bootstrap import open_tenancy
from tenantserve.engine.config import LoraConfig
from tenantserve.engine.request import EngineRequest, LoraRef, SamplingParams
from tenantserve.engine_ray.client import RayServeEngineClient
from tenantserve.ray_config import RayConfig
from tests.helpers.lora import write_random_adapter
from tests.helpers.ray import local_ray
from tests.helpers.server import Running, add_tenant, serve, server_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count to ten, please."}]
# Serve learns which replica holds an adapter from the replica's report to its controller
# (pushed every 0.1 s, then broadcast to routers): sequential traffic sticks after that.
ROUTER_LEARNS_ADAPTERS_S = 1.5


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray for the module (2 CPUs), Serve and Ray shut down after it."""
    with local_ray():
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    ray_cluster: None, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    settings = replace(
        server_settings(tmp_path_factory.mktemp("data"), tiny_model_dir),
        engine_backend="ray",
        ray=RayConfig(
            min_replicas=2,
            max_replicas=2,
            replica_num_cpus=0.5,
            dedicated=(("gold", 1),),
            dedicated_downscale_delay_s=1.0,
            adapter_dir=str(tmp_path_factory.mktemp("replica-adapters")),
        ),
        engine_threads=1,
        lora=LoraConfig(max_loras=2),
    )
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme")
        globex = await add_tenant(tenancy.service, "globex")
    finally:
        await tenancy.db.dispose()
    async with serve(settings) as (url, service):
        yield Running(url=url, service=service, acme=acme, globex=globex)


def _client(running: Running, pool: str = "shared") -> RayServeEngineClient:
    engine = next(p for p in running.service.pools if p.name == pool).engine
    assert isinstance(engine, RayServeEngineClient)
    return engine


def _running_replicas(app: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[app]
    return int(status.replica_states.get("RUNNING", 0))


def _replica_actor_names() -> dict[str, str]:
    """Replica id -> actor name of the shared pool's live replicas."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    return {n.rpartition("#")[2]: n for n in names if n.startswith("SERVE_REPLICA::shared#")}


async def test_requests_are_served_by_the_ray_deployment(running: Running) -> None:
    client = running.sdk()
    reply = await client.chat.completions.create(
        model=running.model, messages=HELLO, max_tokens=5, temperature=0
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    request_id = reply.id.removeprefix("chatcmpl-")
    placement = _client(running).placement(request_id)
    assert placement is not None and placement.replica_id in _replica_actor_names()

    stream = await client.chat.completions.create(
        model=running.model, messages=HELLO, max_tokens=4, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text

    # Concurrent requests are spread over both replicas.
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(model=running.model, messages=HELLO, max_tokens=8)
            for _ in range(8)
        )
    )
    replicas = {_client(running).placement(r.id.removeprefix("chatcmpl-")) for r in replies}
    assert len({p.replica_id for p in replicas if p is not None}) == 2


async def test_sequential_requests_for_an_adapter_stay_on_the_replica_that_has_it(
    running: Running, tiny_model_dir: Path, tmp_path: Path
) -> None:
    engine = _client(running)
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", 4, ["q_proj", "v_proj"], 1)
    lora = LoraRef("acme-a1", str(adapter))

    async def run(i: int) -> str:
        request = EngineRequest(
            f"affinity-{i}",
            (1, 2, 3, 4),
            SamplingParams(max_tokens=4, temperature=0),
            running.acme.id,
            lora=lora,
        )
        outputs = [o async for o in engine.generate(request)]
        assert outputs[-1].finished and outputs[-1].error is None
        placement = engine.placement(request.request_id)
        assert placement is not None
        assert placement.adapter_was_loaded is (i > 0)
        return placement.replica_id

    first = await run(0)
    await asyncio.sleep(ROUTER_LEARNS_ADAPTERS_S)
    assert [await run(i) for i in range(1, 9)] == [first] * 8


async def test_a_replica_pulls_an_adapter_from_the_artifact_store_into_its_own_dir(
    running: Running, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A replica on another node cannot read the gateway's copy: it serves from its own."""
    stored, adapter = await running.ready_adapter("store-bot", tiny_model_dir, tmp_path, 3)
    reply = await running.sdk().chat.completions.create(
        model="store-bot", messages=HELLO, max_tokens=3
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    adapter_dir = running.service.settings.ray.adapter_dir
    assert adapter_dir is not None
    copy = Path(adapter_dir) / "local" / "ray" / stored["id"]
    pulled = sorted(p.name for p in copy.iterdir())
    assert pulled == ["adapter_config.json", "adapter_model.safetensors"]  # what was stored
    for name in pulled:
        assert (copy / name).read_bytes() == (adapter / name).read_bytes()


async def test_a_killed_replica_fails_in_flight_requests_cleanly_and_is_replaced(
    running: Running,
) -> None:
    import ray
    from ray import serve

    tenant = await add_tenant(running.tenancy, "ray-killed")
    client = running.sdk(tenant.key)
    stream = await client.chat.completions.create(
        model=running.model, messages=HELLO, max_tokens=900, stream=True
    )
    first = await anext(aiter(stream))
    placement = _client(running).placement(first.id.removeprefix("chatcmpl-"))
    assert placement is not None
    before = _replica_actor_names()
    ray.kill(ray.get_actor(before[placement.replica_id], namespace="serve"), no_restart=True)

    with pytest.raises(openai.APIError) as failed:
        async with asyncio.timeout(30):  # a clean error, never a hang
            async for _ in stream:
                pass
    assert "replica" in str(failed.value)

    total = await running.usage_total(tenant.key, 1)
    assert total["requests"] == 1 and total["errors"] == 1

    # Serve starts a replacement; new requests are served again.
    deadline = time.monotonic() + 120
    while True:
        now = _replica_actor_names()
        status = serve.status().applications["shared"].deployments["shared"]
        replaced = placement.replica_id not in now and len(now) == 2
        if replaced and status.replica_states.get("RUNNING") == 2:
            break
        assert time.monotonic() < deadline, f"not replaced: {now} {status}"
        await asyncio.sleep(0.5)
    assert len(set(now) - set(before)) == 1
    reply = await client.chat.completions.create(model=running.model, messages=HELLO, max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3


async def test_a_tenant_moved_to_a_dedicated_pool_brings_its_replicas_up_then_lets_go(
    running: Running, tiny_model_dir: Path, tmp_path: Path
) -> None:
    vip = await add_tenant(running.tenancy, "ray-vip", tier="premium")
    await running.ready_adapter("vip-bot", tiny_model_dir, tmp_path, 2, key=vip.key)
    assert _running_replicas("gold") == 0  # declared, holding nothing
    client = running.sdk(vip.key)
    served, failures = 0, list[Exception]()
    moved_back = asyncio.Event()

    async def steady() -> None:
        nonlocal served
        while not moved_back.is_set():
            try:
                await client.chat.completions.create(
                    model=running.model, messages=HELLO, max_tokens=3
                )
                served += 1
            except openai.APIError as e:
                failures.append(e)

    traffic = asyncio.create_task(steady())
    path = f"/admin/tenants/{vip.id}/move"
    async with running.admin() as admin:
        there = await admin.post(path, json={"pool": "gold"}, timeout=300)
        assert there.status_code == 200, there.text
        assert there.json()["scaled_up"] is True and there.json()["bring_up_s"] > 0
        assert there.json()["moved_adapters"] == ["vip-bot"]
        assert _running_replicas("gold") == 1
        # The base model and the tenant's adapter now run on gold's replica.
        for model in (running.model, "vip-bot"):
            on_gold = await client.chat.completions.create(
                model=model, messages=HELLO, max_tokens=3
            )
            assert _client(running, "gold").placement(on_gold.id.removeprefix("chatcmpl-"))
        assert served > 0

        back = await admin.post(path, json={"pool": None}, timeout=300)
        assert back.status_code == 200, back.text
        assert back.json()["released_pool"] == "gold"
    moved_back.set()
    await traffic
    assert failures == [] and served > 0
    total = await running.usage_total(vip.key, served + 2)
    assert total["requests"] == served + 2 and total["errors"] == 0

    deadline = time.monotonic() + 120  # idle and let go: Serve scales it to zero
    while _running_replicas("gold") != 0:
        assert time.monotonic() < deadline, "the dedicated pool kept its replica"
        await asyncio.sleep(0.5)


async def test_a_gateway_leaving_a_ray_cluster_leaves_the_shared_pools_serving(
    running: Running,
) -> None:
    """Several gateways on one cluster (`address` set) share its Serve applications: one
    stopping (a rolling restart) deletes none of them."""
    settings = running.service.settings
    on_cluster = replace(settings, ray=replace(settings.ray, address="auto"))
    async with serve(on_cluster) as (url, service):
        second = Running(url=url, service=service, acme=running.acme, globex=running.globex)
        reply = await second.sdk().chat.completions.create(
            model=second.model, messages=HELLO, max_tokens=3
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert _running_replicas("shared") == 2  # the second gateway is gone, the pool is not
    reply = await running.sdk().chat.completions.create(
        model=running.model, messages=HELLO, max_tokens=3
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 3
