"""The OpenAI-compatible API over real HTTP (uvicorn on a free port), with the tiny model.

Talks to it the way users do: the official openai SDK, and raw HTTP for what the SDK
hides (error bodies, malformed JSON, dropped connections).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tenantserve.admission import LocalRateLimiter
from tenantserve.bootstrap import open_tenancy
from tenantserve.engine.request import EngineRequest, RequestOutput
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import EngineDeadError
from tenantserve.gateway.app import EnginePool, Gateway, ServedModel, create_app
from tenantserve.gateway.catalog import SHARED_POOL
from tests.helpers.server import ADMIN_TOKEN, Running, add_tenant, server_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO_TEXT = "Say hello to the whole wide world, please."
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": HELLO_TEXT}]
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


def _assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def test_health_and_models_list_the_served_model(running: Running) -> None:
    async with running.http(key="") as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
    models = await running.sdk().models.list()
    assert [m.id for m in models.data] == [running.model]
    card = await running.sdk().models.retrieve(running.model)
    assert card.id == running.model


async def test_every_response_carries_its_request_id_and_a_completion_id_contains_it(
    running: Running,
) -> None:
    body = {"model": running.model, "messages": HELLO, "max_tokens": 2, "user": "end-user-42"}
    async with running.http() as http:
        ok = await http.post("/v1/chat/completions", json=body)
        assert ok.status_code == 200, ok.text
        rid = ok.headers["x-request-id"]
        assert REQUEST_ID.fullmatch(rid)
        assert ok.json()["id"] == f"chatcmpl-{rid}"
        text = await http.post("/v1/completions", json={**body, "prompt": "Hi"})
        assert text.json()["id"] == f"cmpl-{text.headers['x-request-id']}"
        async with http.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        ) as streamed:
            events = [line async for line in streamed.aiter_lines() if line.startswith("data: {")]
            rid = streamed.headers["x-request-id"]
        assert all(json.loads(e[6:])["id"] == f"chatcmpl-{rid}" for e in events)
        responses = [
            await http.get("/health"),
            await http.get("/v1/models"),
            await http.get("/v1/nothing-here"),
            await http.post("/v1/chat/completions", content=b"{not json"),
        ]
    async with running.http(key="") as anonymous:
        responses.append(await anonymous.get("/v1/models"))
    ids = [r.headers["x-request-id"] for r in responses]
    assert [r.status_code for r in responses] == [200, 200, 404, 400, 401]
    assert all(REQUEST_ID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)


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
        ({"messages": HELLO, "max_tokens": 100_000}, "max_tokens"),  # above the tier's cap
        ({"messages": HELLO, "max_tokens": 1_000}, "max_tokens"),  # context window exceeded
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
    # 900 tokens take the tiny model about a second on one thread; the client waits 0.1 s.
    body = {"model": running.model, "prompt": "Count forever:", "max_tokens": 900, "temperature": 0}
    async with running.http(timeout=0.1) as http:
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


@asynccontextmanager
async def _app_with(
    engine: _DyingEngine, tiny_model_dir: Path, data_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process (no lifespan: the engine needs no start) with one tenant."""
    tenancy = await open_tenancy(server_settings(data_dir, tiny_model_dir))
    try:
        tenant = await add_tenant(tenancy.service, "acme")
        model = ServedModel("fake", Tokenizer(tiny_model_dir), max_context_tokens=1024)
        gateway = Gateway(
            pools=[EnginePool(SHARED_POOL, engine, model)],
            tenancy=tenancy.service,
            limiter=LocalRateLimiter(),
            admin_token=ADMIN_TOKEN,
        )
        transport = httpx.ASGITransport(app=create_app(gateway))
        headers = {"Authorization": f"Bearer {tenant.key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            yield http
    finally:
        await tenancy.db.dispose()


async def test_an_engine_death_before_output_is_a_503(tiny_model_dir: Path, tmp_path: Path) -> None:
    async with _app_with(_DyingEngine(num_tokens=0), tiny_model_dir, tmp_path) as http:
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        error = _assert_openai_error(await http.post("/v1/chat/completions", json=body), 503)
        assert error["type"] == "server_error"


async def test_an_engine_death_mid_stream_ends_the_stream_with_an_error_event(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    async with _app_with(_DyingEngine(num_tokens=2), tiny_model_dir, tmp_path) as http:
        body = {"model": "fake", "prompt": "hi", "stream": True}
        response = await http.post("/v1/completions", json=body)
    assert response.status_code == 200
    events = [line[len("data: ") :] for line in response.text.splitlines() if line]
    assert [json.loads(e)["choices"][0]["text"] for e in events[:2]] == ["t0 ", "t1 "]
    assert json.loads(events[2])["error"]["type"] == "server_error"
    assert events[3] == "[DONE]"
