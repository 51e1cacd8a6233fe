"""The OpenAI-compatible HTTP API in front of one engine: chat and text completions, SSE.

    GET  /health                  liveness
    GET  /v1/models               the served model
    POST /v1/chat/completions     messages -> chat template -> engine
    POST /v1/completions          prompt (text or token ids) -> engine

Every error leaves in OpenAI's shape (`gateway/errors.py`); outputs leave whole or as
server-sent events (`gateway/streaming.py`). No authentication yet: every request runs as
the tenant "local".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from tenantserve.engine.request import EngineRequest, SamplingParams
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.gateway.engine_client import EngineClient
from tenantserve.gateway.errors import ApiError, api_error_from_validation, install_error_handlers
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
from tenantserve.tiers import Tier

LOCAL_TENANT_ID = "local"
# Completion length when the request names none (clipped to the context window).
DEFAULT_MAX_TOKENS = 1024

Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class ServedModel:
    """The model behind the API: its public name, tokenizer and context window."""

    name: str
    tokenizer: Tokenizer
    max_context_tokens: int
    created: int = 0


def create_app(
    engine: EngineClient, model: ServedModel, on_ready: Callable[[], None] | None = None
) -> FastAPI:
    """The ASGI app; its lifespan starts and stops `engine`, then calls `on_ready`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            if on_ready is not None:
                on_ready()
            yield
        finally:
            await engine.shutdown()

    app = FastAPI(title="tenantserve", lifespan=lifespan)
    api = _Api(engine, model)
    app.add_api_route("/health", api.health, methods=["GET"])
    app.add_api_route("/v1/models", api.models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", api.model_card, methods=["GET"])
    app.add_api_route("/v1/chat/completions", api.chat_completions, methods=["POST"])
    app.add_api_route("/v1/completions", api.completions, methods=["POST"])
    install_error_handlers(app)
    return app


class _Api:
    def __init__(self, engine: EngineClient, model: ServedModel) -> None:
        self.engine = engine
        self.served = model

    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    async def models(self) -> ModelList:
        return ModelList(data=[self._card()])

    async def model_card(self, model_id: str) -> ModelCard:
        self._check_model(model_id)
        return self._card()

    async def chat_completions(self, request: Request) -> Response:
        body = await _parse(request, ChatCompletionRequest)
        self._check_model(body.model)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        prompt = await asyncio.to_thread(self.served.tokenizer.encode_chat, messages)
        engine_request = self._engine_request("chatcmpl", prompt, body, "messages")
        outputs = await Generation.start(self.engine, engine_request)
        created = int(time.time())
        if body.stream:
            return sse(outputs, self._chat_chunks(outputs, body, created))
        text, finish_reason = await collect_while_connected(request, outputs)
        return _json(
            ChatCompletion(
                id=engine_request.request_id,
                created=created,
                model=self.served.name,
                choices=[
                    ChatChoice(message=AssistantMessage(content=text), finish_reason=finish_reason)
                ],
                usage=outputs.usage(),
            )
        )

    async def completions(self, request: Request) -> Response:
        body = await _parse(request, CompletionRequest)
        self._check_model(body.model)
        if isinstance(body.prompt, str):
            prompt = await asyncio.to_thread(self.served.tokenizer.encode, body.prompt)
        elif isinstance(body.prompt[0], str):
            prompt = await asyncio.to_thread(self.served.tokenizer.encode, str(body.prompt[0]))
        else:
            prompt = [int(t) for t in body.prompt]
        if not prompt:
            raise ApiError(400, "the prompt encodes to no tokens", param="prompt")
        engine_request = self._engine_request("cmpl", prompt, body, "prompt")
        outputs = await Generation.start(self.engine, engine_request)
        created = int(time.time())
        if body.stream:
            return sse(outputs, self._completion_chunks(outputs, body, created))
        text, finish_reason = await collect_while_connected(request, outputs)
        return _json(
            Completion(
                id=engine_request.request_id,
                created=created,
                model=self.served.name,
                choices=[CompletionChoice(text=text, finish_reason=finish_reason)],
                usage=outputs.usage(),
            )
        )

    async def _chat_chunks(
        self, outputs: Generation, body: ChatCompletionRequest, created: int
    ) -> AsyncGenerator[BaseModel, None]:
        def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> BaseModel:
            return ChatCompletionChunk(
                id=outputs.request_id,
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
        self, outputs: Generation, body: CompletionRequest, created: int
    ) -> AsyncGenerator[BaseModel, None]:
        def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> BaseModel:
            return Completion(
                id=outputs.request_id,
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

    def _engine_request(
        self,
        prefix: str,
        prompt: Sequence[int],
        body: ChatCompletionRequest | CompletionRequest,
        prompt_param: str,
    ) -> EngineRequest:
        """The engine's request; refuses (400) a prompt that cannot fit the context window."""
        window = self.served.max_context_tokens
        max_tokens = body.requested_max_tokens()
        if max_tokens is None:
            max_tokens = max(1, min(DEFAULT_MAX_TOKENS, window - len(prompt)))
        if len(prompt) + max_tokens > window:
            raise ApiError(
                400,
                f"This model's maximum context length is {window} tokens. However, you "
                f"requested {len(prompt) + max_tokens} tokens ({len(prompt)} in the prompt, "
                f"{max_tokens} for the completion).",
                code="context_length_exceeded",
                param=prompt_param,
            )
        sampling = SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            seed=body.seed,
            stop=body.stop_sequences(),
        )
        return EngineRequest(
            request_id=f"{prefix}-{uuid.uuid4().hex}",
            prompt_token_ids=tuple(prompt),
            sampling=sampling,
            tenant_id=LOCAL_TENANT_ID,
            tier=Tier.STANDARD,
        )

    def _check_model(self, name: str) -> None:
        if name != self.served.name:
            raise ApiError(
                404,
                f"The model `{name}` does not exist. This server serves `{self.served.name}`.",
                code="model_not_found",
                param="model",
            )

    def _card(self) -> ModelCard:
        return ModelCard(id=self.served.name, created=self.served.created)


async def _parse(request: Request, schema: type[Body]) -> Body:
    """The JSON body validated against `schema`, whatever the Content-Type says."""
    raw = await request.body()
    try:
        return schema.model_validate_json(raw)
    except ValidationError as e:
        raise api_error_from_validation(e) from e


def _json(body: BaseModel) -> Response:
    return Response(body.model_dump_json(), media_type="application/json")
