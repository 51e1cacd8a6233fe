"""Ray Serve engine pools: throughput from 1 to 2 replicas, adapter affinity under Zipf.

    .venv/bin/python bench/ray_pools.py [--model-dir DIR] [--requests 64] [--concurrency 8]
        [--adapters 200] [--adapter-requests 400] [--max-loras 8]

A local Ray (`ray.init(num_cpus=2)`); the built-in engine as a Serve deployment through
`RayServeEngineClient` (the gateway left out, so Ray's placement is what is measured),
one engine thread per replica. Default model: the tiny random Llama of the tests
(`--model-dir` for a real checkpoint, e.g. SmolLM2).

1. Throughput: the same closed-loop load (`--concurrency` streams, `--requests` requests
   of 32 tokens each, EOS ignored) on 1 replica, then on 2; completion tokens/s and the
   ratio. On a 2-core machine the ceiling is 2x minus what Ray's own processes take.
2. Affinity: 2 replicas, `--adapters` LoRA adapters (rank 8), adapter ids drawn from a
   Zipf law (s = 1.1), 4 concurrent streams; a hit is a request Serve placed on a replica
   that already had its adapter multiplexed (`Placement.adapter_was_loaded`). Compared
   with one LRU cache of the same total size (2 x `--max-loras`), the best any router
   could do without replicating adapters.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tenantserve.config import RayConfig  # noqa: E402
from tenantserve.engine.config import CacheConfig, EngineConfig, LoraConfig  # noqa: E402
from tenantserve.engine.request import EngineRequest, LoraRef, SamplingParams  # noqa: E402
from tenantserve.engine_ray.client import RayServeEngineClient  # noqa: E402
from tenantserve.engine_ray.deploy import RayPoolDeployment  # noqa: E402

PROMPT = tuple(range(100, 164))  # 64 prompt tokens
ZIPF_S = 1.1


async def closed_loop(
    client: RayServeEngineClient,
    requests: list[EngineRequest],
    concurrency: int,
) -> float:
    """Run `requests` with `concurrency` streams; returns the wall time."""
    queue = list(reversed(requests))

    async def worker() -> None:
        while queue:
            request = queue.pop()
            async for _ in client.generate(request):
                pass

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


def request(i: int, tag: str, max_tokens: int, lora: LoraRef | None = None) -> EngineRequest:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    return EngineRequest(f"{tag}-{i}", PROMPT, sampling, f"tenant-{i % 8}", lora=lora)


async def throughput(engine: EngineConfig, replicas: int, args: argparse.Namespace) -> float:
    """Completion tokens/s of the closed-loop load on `replicas` replicas."""
    ray_cfg = RayConfig(replica_num_cpus=2 / replicas)
    client = RayServeEngineClient(RayPoolDeployment("bench", engine, ray_cfg, replicas, replicas))
    await client.start()
    try:
        warm = [request(i, f"warm{replicas}", 4) for i in range(2 * replicas)]
        await closed_loop(client, warm, 2 * replicas)
        load = [request(i, f"tp{replicas}", args.max_tokens) for i in range(args.requests)]
        wall_s = await closed_loop(client, load, args.concurrency)
    finally:
        await client.shutdown()
    return args.requests * args.max_tokens / wall_s


def zipf_ids(n_adapters: int, n_requests: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    weights = [1 / (k + 1) ** ZIPF_S for k in range(n_adapters)]
    return rng.choices(range(n_adapters), weights=weights, k=n_requests)


def lru_hit_rate(ids: list[int], capacity: int) -> float:
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for i in ids:
        if i in cache:
            hits += 1
            cache.move_to_end(i)
        else:
            cache[i] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits / len(ids)


async def affinity(engine: EngineConfig, adapters: list[Path], args: argparse.Namespace) -> float:
    """The share of adapter requests placed on a replica that had the adapter."""
    client = RayServeEngineClient(
        RayPoolDeployment("bench", engine, RayConfig(replica_num_cpus=1), 2, 2)
    )
    await client.start()
    ids = zipf_ids(len(adapters), args.adapter_requests)
    try:
        load = [
            request(n, "aff", 8, LoraRef(f"adapter-{i}", str(adapters[i])))
            for n, i in enumerate(ids)
        ]
        await closed_loop(client, load, 4)
    finally:
        await client.shutdown()
    hits = [client.placement(r.request_id) for r in load]
    return sum(1 for p in hits if p is not None and p.adapter_was_loaded) / len(load)


async def main(args: argparse.Namespace) -> None:
    import ray
    from ray import serve

    from tenantserve.engine.models.convert import ensure_default_model
    from tests.helpers.lora import write_random_adapter
    from tests.helpers.models import write_tiny_llama

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    model_dir = args.model_dir or write_tiny_llama(
        tmp / "tiny", ensure_default_model(REPO / ".tenantserve")
    )
    engine = EngineConfig(
        model_dir=model_dir,
        num_threads=1,
        cache=replace(CacheConfig(), kv_cache_bytes=64 << 20),
        lora=LoraConfig(max_loras=args.max_loras, max_cpu_loras=args.max_loras * 2),
    )
    t0 = time.perf_counter()
    adapters = [
        write_random_adapter(model_dir, tmp / f"a{i}", 8, ["q_proj", "v_proj"], i)
        for i in range(args.adapters)
    ]
    print(f"{args.adapters} adapters written in {time.perf_counter() - t0:.1f} s", flush=True)
    ray.init(num_cpus=2, log_to_driver=False)
    try:
        one = await throughput(engine, 1, args)
        two = await throughput(engine, 2, args)
        hit_rate = await affinity(engine, adapters, args)
    finally:
        serve.shutdown()
        ray.shutdown()
    ids = zipf_ids(args.adapters, args.adapter_requests)
    ideal = lru_hit_rate(ids, 2 * args.max_loras)
    print(
        f"\nmodel {model_dir.name}, {args.requests} requests x {args.max_tokens} tokens, "
        f"concurrency {args.concurrency}, 2 CPUs"
    )
    print("| replicas | completion tok/s |\n|---|---|")
    print(f"| 1 | {one:.0f} |\n| 2 | {two:.0f} |")
    print(f"\nthroughput ratio 2/1 replicas: {two / one:.2f}x")
    print(
        f"adapter affinity hit rate ({args.adapters} adapters, Zipf s={ZIPF_S}, "
        f"{args.adapter_requests} requests, {args.max_loras} per replica): {hit_rate:.1%} "
        f"(one LRU of {2 * args.max_loras}: {ideal:.1%})"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--adapters", type=int, default=200)
    ap.add_argument("--adapter-requests", type=int, default=400)
    ap.add_argument("--max-loras", type=int, default=8)
    asyncio.run(main(ap.parse_args()))
