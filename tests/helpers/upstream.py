"""A scripted OpenAI-compatible server standing in for an external model server (a vLLM
pool): uvicorn on a free port in the test's event loop, answering chat and text
completions with fixed text and usage, recording every request it receives, and failing
on demand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 5
WORDS = ["Hello", " from", " the", " upstream", "."]


@dataclass
class FakeUpstream:
    """The app; `fail_with` (status, body) makes every completion fail; `delay_s` holds
    each completion back (to see a client disconnect reach the upstream)."""

    name: str = "upstream"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_with: tuple[int, dict[str, Any]] | None = None
    delay_s: float = 0.0
    disconnects: int = 0
    url: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET" and scope["path"].endswith("/models"):  # a health probe
            await _send_json(send, 200, {"object": "list", "data": [{"id": self.name}]})
            return
        body = json.loads(raw)
        self.requests.append(body)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if self.fail_with is not None:
            status, error = self.fail_with
            await _send_json(send, status, error)
            return
        chat = scope["path"].endswith("/chat/completions")
        if body.get("stream"):
            await self._stream(body, chat, receive, send)
            return
        if self.delay_s:
            try:
                async with asyncio.timeout(self.delay_s):
                    if (await receive())["type"] == "http.disconnect":
                        self.disconnects += 1
                        return
            except TimeoutError:
                pass
        text = "".join(WORDS)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}}
            if chat
            else {"index": 0, "text": text}
        )
        choice["finish_reason"] = "stop"
        await _send_json(
            send,
            200,
            {
                "id": "upstream-id",
                "object": "chat.completion" if chat else "text_completion",
                "created": 1,
                "model": body["model"],
                "choices": [choice],
                "usage": _usage(),
            },
        )

    async def _stream(self, body: dict[str, Any], chat: bool, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )

        def event(payload: dict[str, Any]) -> dict[str, Any]:
            data = f"data: {json.dumps(payload)}\n\n".encode()
            return {"type": "http.response.body", "body": data, "more_body": True}

        base = {"id": "upstream-id", "created": 1, "model": body["model"]}
        kind = "chat.completion.chunk" if chat else "text_completion"
        for i, word in enumerate(WORDS):
            if self.delay_s:
                try:
                    async with asyncio.timeout(self.delay_s):
                        if (await receive())["type"] == "http.disconnect":
                            self.disconnects += 1
                            return
                except TimeoutError:
                    pass
            last = i == len(WORDS) - 1
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop" if last else None}
            if chat:
                choice["delta"] = {"content": word}
            else:
                choice["text"] = word
            await send(event({**base, "object": kind, "choices": [choice]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(event({**base, "object": kind, "choices": [], "usage": _usage()}))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


@asynccontextmanager
async def running_upstream(name: str = "upstream") -> AsyncIterator[FakeUpstream]:
    """A FakeUpstream served on 127.0.0.1:<free port>; its `url` ends in /v1."""
    app = FakeUpstream(name)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    app.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield app
    finally:
        server.should_exit = True
        await task
