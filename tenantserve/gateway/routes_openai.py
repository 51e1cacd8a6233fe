"""The OpenAI-compatible routes, every one authenticated (Bearer API key or JWT).

    GET  /v1/models               the models the caller may use (key scope, region)
    GET  /v1/models/{id}          one of them; 404 for any other
    POST /v1/chat/completions     messages -> chat template -> dispatcher -> engine
    POST /v1/completions          prompt (text or token ids) -> dispatcher -> engine

A completion's `id` is `chatcmpl-<request id>` / `cmpl-<request id>`, the same id the
`x-request-id` header carries. Outputs leave whole or as server-sent events
(`gateway/streaming.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from tenantserve.gateway.auth import Authenticator
from tenantserve.gateway.catalog import ModelCatalog
from tenantserve.gateway.dispatch import Dispatcher
from tenantserve.gateway.errors import ApiError, parse_body
from tenantserve.gateway.middleware import request_id
from tenantserve.gateway.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    Usage,
)
from tenantserve.gateway.streaming import (
    Generation,
    collect_while_connected,
    openai_finish_reason,
    sse,
)
from tenantserve.tenancy.model import TenantContext


class OpenAIRoutes:
    """The `/v1` handlers: authenticate, tokenize, dispatch, answer."""

    def __init__(self, auth: Authenticator, catalog: ModelCatalog, dispatcher: Dispatcher) -> None:
        self.auth = auth
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.served = catalog.model

    async def models(self, request: Request) -> ModelList:
        ctx = await self._authenticate(request)
        return ModelList(data=[self._card(r.model_id) for r in self.catalog.visible(ctx)])

    async def model_card(self, request: Request, model_id: str) -> ModelCard:
        ctx = await self._authenticate(request)
        route = self.catalog.routes(ctx).get(model_id)
        visible = {r.target: r for r in self.catalog.visible(ctx)}
        if route is not None and route.target in visible:
            return self._card(visible[route.target].model_id)
        raise ApiError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )

    async def chat_completions(self, request: Request) -> Response:
        ctx = await self._authenticate(request)
        body = await parse_body(request, ChatCompletionRequest)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        prompt = await asyncio.to_thread(self.served.tokenizer.encode_chat, messages)
        rid = request_id(request)
        outputs = await self.dispatcher.dispatch(ctx, rid, body, prompt, "messages")
        completion_id, created = f"chatcmpl-{rid}", int(time.time())
        if body.stream:
            return sse(outputs, self._chat_chunks(outputs, body, completion_id, created))
        text, finish_reason = await collect_while_connected(request, outputs)
        return _json(
            ChatCompletion(
                id=completion_id,
                created=created,
                model=self.served.name,
                choices=[
                    ChatChoice(message=AssistantMessage(content=text), finish_reason=finish_reason)
                ],
                usage=outputs.usage(),
            )
        )

    async def completions(self, request: Request) -> Response:
        ctx = await self._authenticate(request)
        body = await parse_body(request, CompletionRequest)
        if isinstance(body.prompt, str):
            prompt = await asyncio.to_thread(self.served.tokenizer.encode, body.prompt)
        elif isinstance(body.prompt[0], str):
            prompt = await asyncio.to_thread(self.served.tokenizer.encode, str(body.prompt[0]))
        else:
            prompt = [int(t) for t in body.prompt]
        if not prompt:
            raise ApiError(400, "the prompt encodes to no tokens", param="prompt")
        rid = request_id(request)
        outputs = await self.dispatcher.dispatch(ctx, rid, body, prompt, "prompt")
        completion_id, created = f"cmpl-{rid}", int(time.time())
        if body.stream:
            return sse(outputs, self._completion_chunks(outputs, body, completion_id, created))
        text, finish_reason = await collect_while_connected(request, outputs)
        return _json(
            Completion(
                id=completion_id,
                created=created,
                model=self.served.name,
                choices=[CompletionChoice(text=text, finish_reason=finish_reason)],
                usage=outputs.usage(),
            )
        )

    async def _authenticate(self, request: Request) -> TenantContext:
        return await self.auth.authenticate(request.headers.get("authorization"))

    async def _chat_chunks(
        self, outputs: Generation, body: ChatCompletionRequest, completion_id: str, created: int
    ) -> AsyncGenerator[BaseModel, None]:
        def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> BaseModel:
            return ChatCompletionChunk(
                id=completion_id,
                created=created,
                model=self.served.name,
                choices=choices,
                usage=usage,
            )

        yield chunk([ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])
        async for out in outputs:
            if out.text_delta:
                yield chunk([ChatChunkChoice(delta=ChatDelta(content=out.text_delta))])
            if out.finished:
                reason = openai_finish_reason(out.finish_reason)
                yield chunk([ChatChunkChoice(delta=ChatDelta(), finish_reason=reason)])
        if body.include_usage:
            yield chunk([], outputs.usage())

    async def _completion_chunks(
        self, outputs: Generation, body: CompletionRequest, completion_id: str, created: int
    ) -> AsyncGenerator[BaseModel, None]:
        def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> BaseModel:
            return Completion(
                id=completion_id,
                created=created,
                model=self.served.name,
                choices=choices,
                usage=usage,
            )

        async for out in outputs:
            if out.text_delta or out.finished:
                reason = openai_finish_reason(out.finish_reason) if out.finished else None
                yield chunk([CompletionChoice(text=out.text_delta, finish_reason=reason)])
        if body.include_usage:
            yield chunk([], outputs.usage())

    def _card(self, model_id: str) -> ModelCard:
        return ModelCard(id=model_id, created=self.served.created)


def _json(body: BaseModel) -> Response:
    return Response(body.model_dump_json(), media_type="application/json")
