"""The OpenAI-compatible API over real HTTP (uvicorn on a free port), with the tiny model.

Talks to it the way users do: the official openai SDK, and raw HTTP for what the SDK
hides (error bodies, malformed JSON, dropped connections).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
import uvicorn
from openai.types.chat import ChatCompletionMessageParam

from tenantserve.bootstrap import Service, build_service
from tenantserve.config import CacheConfig, Settings
from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.request import EngineRequest, RequestOutput
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import EngineDeadError
from tenantserve.gateway.app import ServedModel, create_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO_TEXT = "Say hello to the whole wide world, please."
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": HELLO_TEXT}]


@dataclass(frozen=True)
class Running:
    url: str
    service: Service

    @property
    def model(self) -> str:
        return self.service.model.name

    @property
    def engine(self) -> AsyncEngineClient:
        assert isinstance(self.service.engine, AsyncEngineClient)
        return self.service.engine

    def sdk(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tiny_model_dir: Path) -> AsyncIterator[Running]:
    settings = Settings(
        model_dir=tiny_model_dir, cache=replace(CacheConfig(), kv_cache_bytes=16 << 20)
    )
    service = build_service(settings)
    config = uvicorn.Config(service.app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(120):
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise its error
                pytest.fail("the server stopped during start-up")
            await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield Running(url=f"http://127.0.0.1:{port}", service=service)
    server.should_exit = True
    await task


def _assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def test_health_and_models_list_the_served_model(running: Running) -> None:
    async with running.http() as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
    models = await running.sdk().models.list()
    assert [m.id for m in models.data] == [running.model]


async def test_chat_completion_returns_text_and_usage(running: Running) -> None:
    completion = await running.sdk().chat.completions.create(
        model=running.model,
        messages=HELLO,
        max_tokens=8,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    expected_prompt = running.service.model.tokenizer.encode_chat(
        [{"role": "user", "content": HELLO_TEXT}]
    )
    assert usage.prompt_tokens == len(expected_prompt)
    assert 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens is not None


async def test_streamed_chat_equals_the_whole_answer_and_ends_with_usage(running: Running) -> None:
    sdk = running.sdk()
    args: dict[str, Any] = {
        "model": running.model,
        "messages": HELLO,
        "max_completion_tokens": 12,
        "temperature": 0,
    }
    whole = await sdk.chat.completions.create(**args)
    stream = await sdk.chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


async def test_repeated_prompt_reports_cached_tokens(running: Running) -> None:
    sdk = running.sdk()
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "A long question that is repeated: " + "why? " * 20}
    ]
    for _ in range(2):
        completion = await sdk.chat.completions.create(
            model=running.model,
            messages=messages,
            max_tokens=2,
            temperature=0,
        )
    details = completion.usage.prompt_tokens_details  # type: ignore[union-attr]
    assert details is not None and details.cached_tokens
    assert details.cached_tokens >= 16


async def test_text_completion_from_text_and_from_token_ids(running: Running) -> None:
    sdk = running.sdk()
    ids = running.service.model.tokenizer.encode("Once upon a time")
    from_text = await sdk.completions.create(
        model=running.model, prompt="Once upon a time", max_tokens=5, temperature=0
    )
    from_ids = await sdk.completions.create(
        model=running.model, prompt=ids, max_tokens=5, temperature=0
    )
    assert from_text.choices[0].text == from_ids.choices[0].text
    assert from_text.usage is not None and from_text.usage.prompt_tokens == len(ids)
    stream = await sdk.completions.create(
        model=running.model, prompt=ids, max_tokens=5, temperature=0, stream=True
    )
    assert "".join([c.choices[0].text async for c in stream]) == from_text.choices[0].text


async def test_seeded_sampling_is_reproducible(running: Running) -> None:
    sdk = running.sdk()

    async def sample() -> str | None:
        c = await sdk.chat.completions.create(
            model=running.model,
            messages=HELLO,
            max_tokens=10,
            temperature=1.0,
            seed=7,
        )
        return c.choices[0].message.content

    assert await sample() == await sample()


async def test_unknown_model_is_a_404(running: Running) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        await running.sdk().chat.completions.create(model="gpt-5", messages=HELLO)
    assert e.value.code == "model_not_found"
    async with running.http() as http:
        _assert_openai_error(await http.get("/v1/nothing-here"), 404)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": []}', "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages"),
        ({"messages": HELLO, "temperature": 5}, "temperature"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"messages": HELLO, "top_p": 0}, "top_p"),
        ({"messages": HELLO, "n": 2}, "n"),
        ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": HELLO, "stream": "maybe"}, "stream"),
        ({"messages": HELLO, "max_tokens": 100_000}, "messages"),  # context window exceeded
    ],
)
async def test_bad_chat_input_is_a_400_in_openai_shape(
    running: Running, body: bytes | dict[str, Any], param: str | None
) -> None:
    if isinstance(body, dict):
        body = json.dumps({"model": running.model, **body}).encode()
    async with running.http() as http:
        for stream in (False, True):
            payload = body
            if stream and body.startswith(b"{") and b"stream" not in body:
                payload = body[:-1] + b', "stream": true}'
            response = await http.post("/v1/chat/completions", content=payload)
            error = _assert_openai_error(response, 400)
            assert error["type"] == "invalid_request_error"
            assert error["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": ""},
        {"prompt": []},
        {"prompt": [1, 2, 10_000_000]},  # outside the vocabulary: the engine refuses it
        {"prompt": ["a", "b"]},
        {"prompt": "hi", "echo": True},
    ],
)
async def test_bad_completion_input_is_a_400(running: Running, body: dict[str, Any]) -> None:
    async with running.http() as http:
        response = await http.post("/v1/completions", json={"model": running.model, **body})
    _assert_openai_error(response, 400)


async def test_form_encoded_json_body_is_accepted(running: Running) -> None:
    # `curl -d '{...}'` without a Content-Type header sends form encoding.
    body = json.dumps({"model": running.model, "messages": HELLO, "max_tokens": 2})
    async with running.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200, response.text


async def test_a_client_leaving_mid_stream_frees_the_request(running: Running) -> None:
    body = {
        "model": running.model,
        "prompt": "Count forever:",
        "max_tokens": 900,
        "temperature": 0,
        "stream": True,
    }
    async with running.http() as http, http.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                break  # leave after the first event
    # Generating all 900 tokens takes far longer than this: the request was aborted.
    async with asyncio.timeout(5):
        while running.engine.num_unfinished_requests:
            await asyncio.sleep(0.05)
    # The engine still serves.
    again = await running.sdk().completions.create(model=running.model, prompt="Hi", max_tokens=2)
    assert again.choices[0].finish_reason in ("stop", "length")


async def test_a_client_timing_out_on_a_whole_answer_frees_the_request(running: Running) -> None:
    body = {"model": running.model, "prompt": "Count forever:", "max_tokens": 900, "temperature": 0}
    async with httpx.AsyncClient(base_url=running.url, timeout=1.0) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/completions", json=body)
    async with asyncio.timeout(5):
        while running.engine.num_unfinished_requests:
            await asyncio.sleep(0.05)


class _DyingEngine:
    """An engine that emits `num_tokens` outputs, then dies (EngineDeadError)."""

    def __init__(self, num_tokens: int) -> None:
        self.num_tokens = num_tokens

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        for i in range(self.num_tokens):
            yield RequestOutput(request.request_id, (100 + i,), f"t{i} ")
        raise EngineDeadError("the engine process exited with code -9")

    async def abort(self, request_id: str) -> None:
        pass


def _app_with(engine: _DyingEngine, tiny_model_dir: Path) -> httpx.AsyncClient:
    model = ServedModel("fake", Tokenizer(tiny_model_dir), max_context_tokens=1024)
    transport = httpx.ASGITransport(app=create_app(engine, model))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_an_engine_death_before_output_is_a_503(tiny_model_dir: Path) -> None:
    async with _app_with(_DyingEngine(num_tokens=0), tiny_model_dir) as http:
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        error = _assert_openai_error(await http.post("/v1/chat/completions", json=body), 503)
        assert error["type"] == "server_error"


async def test_an_engine_death_mid_stream_ends_the_stream_with_an_error_event(
    tiny_model_dir: Path,
) -> None:
    async with _app_with(_DyingEngine(num_tokens=2), tiny_model_dir) as http:
        body = {"model": "fake", "prompt": "hi", "stream": True}
        response = await http.post("/v1/completions", json=body)
    assert response.status_code == 200
    events = [line[len("data: ") :] for line in response.text.splitlines() if line]
    assert [json.loads(e)["choices"][0]["text"] for e in events[:2]] == ["t0 ", "t1 "]
    assert json.loads(events[2])["error"]["type"] == "server_error"
    assert events[3] == "[DONE]"
