"""AsyncEngineClient against a real engine process serving the tiny random Llama."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
import pytest_asyncio

from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.config import CacheConfig, EngineConfig
from tenantserve.engine.request import (
    EngineRequest,
    FinishReason,
    LoraRef,
    RequestOutput,
    SamplingParams,
)
from tenantserve.errors import EngineDeadError, EngineError, InvalidRequestError, TenantServeError

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

PROMPT = tuple(range(100, 112))
_ids = itertools.count()


def engine_config(model_dir: Path) -> EngineConfig:
    # 1 MiB of KV cache: 128 blocks of 16 tokens, so the context is the model's 1024.
    return EngineConfig(
        model_dir=model_dir, num_threads=1, cache=CacheConfig(kv_cache_bytes=1 << 20)
    )


def make_request(
    max_tokens: int = 8, prompt: tuple[int, ...] = PROMPT, **kw: object
) -> EngineRequest:
    return EngineRequest(
        request_id=f"req-{next(_ids)}",
        prompt_token_ids=prompt,
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
        tenant_id="tenant-a",
        **kw,  # type: ignore[arg-type]
    )


async def collect(client: AsyncEngineClient, request: EngineRequest) -> list[RequestOutput]:
    return [out async for out in client.generate(request)]


def engine_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("tenantserve-engine")}


def assert_reaped(pid: int) -> None:
    """The process is gone and was waited for (no zombie left behind)."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tiny_model_dir: Path) -> AsyncIterator[AsyncEngineClient]:
    async with AsyncEngineClient(engine_config(tiny_model_dir)) as c:
        yield c


async def test_request_streams_tokens_and_finishes_with_metrics(client: AsyncEngineClient) -> None:
    outputs = await collect(client, make_request(max_tokens=8))

    assert len(outputs) == 8
    assert all(len(out.new_token_ids) == 1 for out in outputs)
    assert [out.finished for out in outputs] == [False] * 7 + [True]
    final = outputs[-1]
    assert final.finish_reason is FinishReason.LENGTH
    assert final.metrics is not None
    assert final.metrics.num_prompt_tokens == len(PROMPT)
    assert final.metrics.num_completion_tokens == 8


async def test_concurrent_requests_all_complete(client: AsyncEngineClient) -> None:
    requests = [make_request(max_tokens=4 + i) for i in range(6)]

    results = await asyncio.gather(*(collect(client, r) for r in requests))

    for request, outputs in zip(requests, results, strict=True):
        assert all(out.request_id == request.request_id for out in outputs)
        assert outputs[-1].finished
        assert sum(len(out.new_token_ids) for out in outputs) == request.sampling.max_tokens
    assert client.num_unfinished_requests == 0


async def test_abort_mid_stream_finishes_the_request_with_abort(client: AsyncEngineClient) -> None:
    request = make_request(max_tokens=900)
    outputs = []
    async for out in client.generate(request):
        outputs.append(out)
        if len(outputs) == 3:
            await client.abort(request.request_id)

    assert outputs[-1].finished
    assert outputs[-1].finish_reason is FinishReason.ABORT
    assert len(outputs) < 900
    stats = await client.stats()
    assert stats.num_running == stats.num_waiting == 0


async def test_dropping_the_stream_aborts_the_request_in_the_engine(
    client: AsyncEngineClient,
) -> None:
    steps_before = (await client.stats()).num_steps
    async for _ in client.generate(make_request(max_tokens=900)):
        break  # the consumer leaves (client disconnect); the generator is dropped

    # The engine confirms the abort with the request's final output, long before the
    # 900 tokens it would otherwise have generated.
    async with asyncio.timeout(10):
        while client.num_unfinished_requests:
            await asyncio.sleep(0.01)
    stats = await client.stats()
    assert stats.num_running == stats.num_waiting == 0
    assert stats.num_steps - steps_before < 450


async def test_cancelling_the_consumer_aborts_the_request_in_the_engine(
    client: AsyncEngineClient,
) -> None:
    first_token = asyncio.Event()

    async def consume() -> None:
        async with aclosing(client.generate(make_request(max_tokens=900))) as stream:
            async for _ in stream:
                first_token.set()

    task = asyncio.create_task(consume())
    await first_token.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async with asyncio.timeout(10):
        while client.num_unfinished_requests:
            await asyncio.sleep(0.01)
    stats = await client.stats()
    assert stats.num_running == stats.num_waiting == 0


@pytest.mark.parametrize(
    "bad_request",
    [
        pytest.param(lambda: make_request(prompt=tuple(range(1, 1100))), id="prompt-too-long"),
        pytest.param(
            lambda: make_request(lora=LoraRef("missing", "/nonexistent/adapter")),
            id="unknown-adapter",
        ),
    ],
)
async def test_invalid_request_raises_and_the_engine_keeps_serving(
    client: AsyncEngineClient, bad_request: object
) -> None:
    request = bad_request()  # type: ignore[operator]
    with pytest.raises(InvalidRequestError):
        await collect(client, request)

    outputs = await collect(client, make_request(max_tokens=3))
    assert outputs[-1].finish_reason is FinishReason.LENGTH


async def test_event_loop_keeps_running_while_the_engine_computes(
    client: AsyncEngineClient,
) -> None:
    gaps_s: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps_s.append(now - last)
            last = now

    tick_task = asyncio.create_task(ticker())
    started = time.perf_counter()
    outputs = await collect(client, make_request(max_tokens=600))
    elapsed_s = time.perf_counter() - started
    done.set()
    await tick_task

    assert outputs[-1].finished
    assert max(gaps_s) < 0.25, f"the loop stalled for {max(gaps_s):.3f} s"
    assert len(gaps_s) >= elapsed_s / 0.05


async def test_killed_engine_fails_in_flight_stream_then_restarts(tiny_model_dir: Path) -> None:
    async with AsyncEngineClient(engine_config(tiny_model_dir)) as client:
        pid = client.pid
        assert pid is not None
        stream = client.generate(make_request(max_tokens=900))
        await anext(stream)
        os.kill(pid, signal.SIGKILL)

        with pytest.raises(EngineDeadError, match=r"exited with code -9 and is restarting"):
            async for _ in stream:
                pass

        assert client.num_restarts == 1
        # Sent while the new process is still starting: waits for it, then runs.
        outputs = await collect(client, make_request(max_tokens=4))
        assert outputs[-1].finish_reason is FinishReason.LENGTH
        assert client.pid not in (None, pid)
        assert_reaped(pid)


async def test_generate_during_a_restart_waits_a_bounded_time_then_raises_engine_dead(
    tiny_model_dir: Path,
) -> None:
    threads_before = engine_threads()
    client = AsyncEngineClient(engine_config(tiny_model_dir), ready_timeout_s=0.2)
    await client.start()
    pid = client.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        while client.num_restarts == 0:
            await asyncio.sleep(0.01)

    # The new process needs seconds to import torch and load the model.
    with pytest.raises(EngineDeadError, match="restarting"):
        await collect(client, make_request())

    await client.shutdown()  # also stops the restart in progress
    assert client.pid is None
    assert engine_threads() == threads_before


async def test_shutdown_ends_streams_reaps_the_process_and_is_idempotent(
    tiny_model_dir: Path,
) -> None:
    client = AsyncEngineClient(engine_config(tiny_model_dir))
    await client.start()
    pid = client.pid
    assert pid is not None
    stream = client.generate(make_request(max_tokens=900))
    await anext(stream)

    await client.shutdown()
    await client.shutdown()

    with pytest.raises(EngineError, match="shut down"):
        async for _ in stream:
            pass
    with pytest.raises(EngineError, match="shut down"):
        await collect(client, make_request())
    assert client.num_restarts == 0
    assert_reaped(pid)
    assert not {name for name in engine_threads() if name.endswith(f"-{pid}")}


async def test_startup_failure_raises_with_the_model_dir(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    client = AsyncEngineClient(EngineConfig(model_dir=missing))
    threads_before = engine_threads()

    with pytest.raises(TenantServeError, match="no-such-model"):
        await client.start()

    await client.shutdown()
    assert engine_threads() == threads_before
