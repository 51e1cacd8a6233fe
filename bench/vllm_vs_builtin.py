"""The built-in engine vs a vLLM pool (vLLM's CPU build), side by side on one workload
through the same gateway: N chat requests of M output tokens at concurrency C, same model
(SmolLM2-135M-Instruct), greedy. Prints requests/s and output tokens/s of each.

    .venv/bin/python bench/vllm_vs_builtin.py [--requests 32] [--max-tokens 64] \\
        [--concurrency 4] [--vllm-python .venv-vllm/bin/python]

The gateway runs in this process (uvicorn on a free loopback port) with the built-in
engine and a `kind = "vllm"` pool that it launches itself (`launch = {...}`), so the
vLLM pool's start-up is measured too. The two backends run one after the other, each
after two warm-up requests; output tokens are the usage each reply reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import openai
import uvicorn

from tenantserve.bootstrap import build_service, open_tenancy
from tenantserve.config import Settings
from tenantserve.engine.models.convert import ensure_default_model
from tenantserve.pool_config import PoolConfig, VllmConfig, VllmLaunchConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
VLLM_MODEL = "smol-vllm"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how tides work.",
    "List some uses of copper.",
    "Describe a walk through a forest in autumn.",
]


async def _run(
    sdk: openai.AsyncOpenAI, model: str, requests: int, max_tokens: int, concurrency: int
) -> tuple[float, int]:
    """Seconds for `requests` requests at `concurrency`, and the output tokens they made."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while not queue.empty():
            i = queue.get_nowait()
            reply = await sdk.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                max_tokens=max_tokens,
                temperature=0,
            )
            assert reply.usage is not None
            tokens += reply.usage.completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, tokens


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    model_dir = ensure_default_model(REPO_ROOT / ".tenantserve")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    pool = PoolConfig(
        name="vllm",
        kind="vllm",
        base_url="",
        models=(VLLM_MODEL,),
        max_model_len=2048,
        vllm=VllmConfig(
            launch=VllmLaunchConfig(
                model=model_dir,
                python=Path(args.vllm_python),
                args=("--max-model-len", "2048", "--dtype", "bfloat16"),
            ),
        ),
    )
    settings = replace(
        Settings(data_dir=data_dir, model_dir=model_dir), pools=(pool,), admin_token="bench"
    )
    tenancy = await open_tenancy(settings)
    try:
        tenant = await tenancy.service.create_tenant("bench", "premium", "us")
        key = (await tenancy.service.create_key(tenant.id, None, ())).plaintext
    finally:
        await tenancy.db.dispose()
    service = build_service(settings)
    server = uvicorn.Server(
        uvicorn.Config(service.app, host="127.0.0.1", port=0, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    started = time.perf_counter()
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.1)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"gateway + built-in engine + vLLM up in {time.perf_counter() - started:.1f} s")
    sdk = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=600
    )
    rows = []
    try:
        for label, model in (("built-in engine", model_dir.name), ("vLLM pool (CPU)", VLLM_MODEL)):
            await _run(sdk, model, 2, args.max_tokens, 2)  # warm-up
            seconds, tokens = await _run(
                sdk, model, args.requests, args.max_tokens, args.concurrency
            )
            rows.append((label, seconds, tokens))
    finally:
        server.should_exit = True
        await task
    print(
        f"\n{args.requests} chat requests, max_tokens {args.max_tokens}, "
        f"concurrency {args.concurrency}, {model_dir.name}, {os.cpu_count()} CPU cores\n"
    )
    print(f"{'backend':<18} {'seconds':>8} {'req/s':>7} {'out tok':>8} {'out tok/s':>10}")
    for label, seconds, tokens in rows:
        print(
            f"{label:<18} {seconds:>8.1f} {args.requests / seconds:>7.2f} "
            f"{tokens:>8d} {tokens / seconds:>10.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--vllm-python",
        default=os.environ.get("TENANTSERVE_VLLM_PYTHON", str(REPO_ROOT / ".venv-vllm/bin/python")),
    )
    asyncio.run(main(parser.parse_args()))
