"""The OpenAI-compatible routes, every one authenticated (Bearer API key or JWT).

    GET  /v1/models               the models the caller may use (key scope, region)
    GET  /v1/models/{id}          one of them; 404 for any other
    POST /v1/chat/completions     messages -> chat template -> dispatcher -> pool backend
    POST /v1/completions          prompt (text or token ids) -> dispatcher -> pool backend

On an engine pool the gateway tokenizes (the count admission checks is exact); on an
upstream pool the client's JSON is forwarded (`gateway/upstream_forward.py`) and the
prompt is counted with the model's tokenizer when the gateway has it, else estimated from
its length (the reservation is corrected by the upstream's usage).

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

from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.gateway.admitted import NEVER_RAN, Admission
from tenantserve.gateway.auth import Authenticator
from tenantserve.gateway.catalog import ModelCatalog
from tenantserve.gateway.dispatch import Body, Dispatcher
from tenantserve.gateway.engine_start import start_generation
from tenantserve.gateway.errors import ApiError, parse_json
from tenantserve.gateway.middleware import request_id
from tenantserve.gateway.pools import UpstreamPool
from tenantserve.gateway.resolver import Resolved
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
from tenantserve.gateway.upstream_forward import forward, server_timing
from tenantserve.tenancy.model import TenantContext


class OpenAIRoutes:
    """The `/v1` handlers: authenticate, count the prompt, admit, run on the admitted
    pool's backend, answer."""

    def __init__(self, auth: Authenticator, catalog: ModelCatalog, dispatcher: Dispatcher) -> None:
        self.auth = auth
        self.catalog = catalog
        self.dispatcher = dispatcher

    async def models(self, request: Request) -> ModelList:
        """The catalog's models the caller may use, then its own ready adapters."""
        ctx = await self._authenticate(request)
        cards = [self._card(r.model_id) for r in self.catalog.visible(ctx)]
        for name, created in await self.dispatcher.adapter_cards(ctx):
            cards.append(ModelCard(id=name, created=created, owned_by=ctx.tenant_id))
        return ModelList(data=cards)

    async def model_card(self, request: Request, model_id: str) -> ModelCard:
        ctx = await self._authenticate(request)
        route = self.catalog.routes(ctx).get(model_id)
        visible = {r.target: r for r in self.catalog.visible(ctx)}
        if route is not None and route.target in visible:
            return self._card(visible[route.target].model_id)
        for name, created in await self.dispatcher.adapter_cards(ctx):
            if name == model_id:
                return ModelCard(id=name, created=created, owned_by=ctx.tenant_id)
        raise ApiError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )

    async def chat_completions(self, request: Request) -> Response:
        ctx = await self._authenticate(request)
        raw = await request.body()
        body = parse_json(raw, ChatCompletionRequest)
        rid = request_id(request)
        resolved = await self.dispatcher.resolve(ctx, body.model, rid)
        tokenizer = self._tokenizer(body.model, resolved)
        prompt: list[int] | None = None
        if tokenizer is not None:
            messages = [
                {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in body.messages
            ]
            prompt = await asyncio.to_thread(tokenizer.encode_chat, messages)
        num_prompt = len(prompt) if prompt is not None else body.estimated_prompt_tokens()
        admission = await self.dispatcher.admit(ctx, rid, body, num_prompt, "messages", resolved)
        if isinstance(admission.pool, UpstreamPool):
            return await forward(
                request, self.dispatcher, admission, raw, body, "/chat/completions"
            )
        outputs = await self._start(admission, body, prompt)
        completion_id, created = f"chatcmpl-{rid}", int(time.time())
        model = admission.decision.route.target
        headers = server_timing(admission)
        if body.stream:
            chunks = self._chat_chunks(outputs, body, completion_id, created, model)
            return sse(outputs, chunks, headers)
        text, finish_reason = await collect_while_connected(request, outputs)
        self.dispatcher.mirror(admission, body, raw, prompt, "/chat/completions", text)
        return _json(
            ChatCompletion(
                id=completion_id,
                created=created,
                model=model,
                choices=[
                    ChatChoice(message=AssistantMessage(content=text), finish_reason=finish_reason)
                ],
                usage=outputs.usage(),
            ),
            headers,
        )

    async def completions(self, request: Request) -> Response:
        ctx = await self._authenticate(request)
        raw = await request.body()
        body = parse_json(raw, CompletionRequest)
        rid = request_id(request)
        resolved = await self.dispatcher.resolve(ctx, body.model, rid)
        tokenizer = self._tokenizer(body.model, resolved)
        prompt: list[int] | None = None
        if not isinstance(body.prompt, str) and not isinstance(body.prompt[0], str):
            prompt = [int(t) for t in body.prompt]
        elif tokenizer is not None:
            text = body.prompt if isinstance(body.prompt, str) else str(body.prompt[0])
            prompt = await asyncio.to_thread(tokenizer.encode, text)
        if prompt is not None and not prompt:
            raise ApiError(400, "the prompt encodes to no tokens", param="prompt")
        num_prompt = len(prompt) if prompt is not None else body.estimated_prompt_tokens()
        admission = await self.dispatcher.admit(ctx, rid, body, num_prompt, "prompt", resolved)
        if isinstance(admission.pool, UpstreamPool):
            return await forward(request, self.dispatcher, admission, raw, body, "/completions")
        outputs = await self._start(admission, body, prompt)
        completion_id, created = f"cmpl-{rid}", int(time.time())
        model = admission.decision.route.target
        headers = server_timing(admission)
        if body.stream:
            chunks = self._completion_chunks(outputs, body, completion_id, created, model)
            return sse(outputs, chunks, headers)
        text, finish_reason = await collect_while_connected(request, outputs)
        self.dispatcher.mirror(admission, body, raw, prompt, "/completions", text)
        return _json(
            Completion(
                id=completion_id,
                created=created,
                model=model,
                choices=[CompletionChoice(text=text, finish_reason=finish_reason)],
                usage=outputs.usage(),
            ),
            headers,
        )

    def _tokenizer(self, model: str, resolved: Resolved | None) -> Tokenizer | None:
        """The tokenizer of the model a request runs on (an adapter's: its base model's)."""
        if resolved is not None:
            return resolved.tokenizer
        return self.catalog.tokenizer(model)

    async def _start(
        self, admission: Admission, body: Body, prompt: list[int] | None
    ) -> Generation:
        if prompt is None:  # an engine pool always has its model's tokenizer
            await admission.close(NEVER_RAN)
            raise ApiError(500, "no tokenizer for an engine-served model", "server_error")
        return await start_generation(admission, body, prompt)

    async def _authenticate(self, request: Request) -> TenantContext:
        return await self.auth.authenticate(request.headers.get("authorization"))

    async def _chat_chunks(
        self,
        outputs: Generation,
        body: ChatCompletionRequest,
        completion_id: str,
        created: int,
        model: str,
    ) -> AsyncGenerator[BaseModel, None]:
        def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> BaseModel:
            return ChatCompletionChunk(
                id=completion_id,
                created=created,
                model=model,
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
        self,
        outputs: Generation,
        body: CompletionRequest,
        completion_id: str,
        created: int,
        model: str,
    ) -> AsyncGenerator[BaseModel, None]:
        def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> BaseModel:
            return Completion(
                id=completion_id,
                created=created,
                model=model,
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
        return ModelCard(id=model_id, created=self.catalog.created(model_id))


def _json(body: BaseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
