"""A fake OpenAI-compatible upstream for the gateway benchmark: a fixed completion, instantly.

    .venv/bin/python bench/fake_openai.py --port 9100 [--host 127.0.0.1] [--model fake-model]

    POST /v1/chat/completions   a fixed chat completion; SSE chunks when "stream": true
    POST /v1/completions        a fixed text completion; SSE chunks when "stream": true
    GET  /v1/models             the one model

A plain ASGI callable under uvicorn (uvloop, httptools, no access log), no framework, so
that it is never the bottleneck. It still does what any server must: reads the whole
body and parses the JSON; the response echoes the request's `model` and carries `usage`
(and, streamed, a usage chunk when `stream_options.include_usage`, then `data: [DONE]`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TEXT = "Hi there! How can I help you today?"
PIECES = ["Hi", " there!", " How can I", " help you today?"]
PROMPT_TOKENS = 9
COMPLETION_TOKENS = 10
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def completion(chat: bool, model: str) -> dict[str, Any]:
    """The whole (non-streamed) response body."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": TEXT}
    else:
        choice["text"] = TEXT
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(),
    }


def chunks(chat: bool, model: str, include_usage: bool) -> list[bytes]:
    """The server-sent events of a streamed response, `data: [DONE]` last."""
    cid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    base = {
        "id": cid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    events: list[dict[str, Any]] = []
    for i, piece in enumerate(PIECES):
        last = i == len(PIECES) - 1
        if chat:
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            choice: dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": piece}
        choice["finish_reason"] = "stop" if last else None
        events.append({**base, "choices": [choice]})
    if include_usage:
        events.append({**base, "choices": [], "usage": usage()})
    out = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    out.append(b"data: [DONE]\n\n")
    return out


async def read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def respond(send: Send, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*(headers or JSON_HEADERS), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


class FakeOpenAI:
    """The ASGI app; `model` is what /v1/models lists (any requested model is echoed)."""

    def __init__(self, model: str) -> None:
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in ("/v1/models", "/models"):
            models = {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "bench"}],
            }
            await respond(send, 200, json.dumps(models).encode())
            return
        if method == "GET" and path in ("/health", "/"):
            await respond(send, 200, b'{"status":"ok"}')
            return
        chat = path in ("/v1/chat/completions", "/chat/completions")
        if method != "POST" or not (chat or path in ("/v1/completions", "/completions")):
            await read_body(receive)
            await respond(send, 404, error(f"no route {method} {path}"))
            return
        try:
            request = json.loads(await read_body(receive))
        except ValueError:
            await respond(send, 400, error("body is not JSON"))
            return
        model = str(request.get("model") or self.model)
        if not request.get("stream"):
            await respond(send, 200, json.dumps(completion(chat, model)).encode())
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for event in chunks(chat, model, include_usage):
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fake-model")
    args = parser.parse_args()
    print(f"fake OpenAI upstream on http://{args.host}:{args.port}/v1", file=sys.stderr)
    uvicorn.run(
        FakeOpenAI(args.model),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
