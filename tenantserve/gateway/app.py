"""The OpenAI-compatible HTTP API in front of one engine: chat and text completions, SSE.

    GET  /health                  liveness
    GET  /v1/models               the served model
    POST /v1/chat/completions     messages -> chat template -> engine
    POST /v1/completions          prompt (text or token ids) -> engine

Every error leaves in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`:
4xx for the client's mistakes (malformed JSON and schema violations included), 5xx only
for ours. No authentication yet: every request runs as the tenant "local".
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from tenantserve.engine.request import (
    EngineRequest,
    FinishReason,
    RequestMetrics,
    RequestOutput,
    SamplingParams,
)
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import (
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    PromptTooLongError,
)
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
    ErrorDetail,
    ErrorResponse,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    Usage,
)
from tenantserve.tiers import Tier

logger = logging.getLogger(__name__)

LOCAL_TENANT_ID = "local"
# Completion length when the request names none (clipped to the context window).
DEFAULT_MAX_TOKENS = 1024

Body = TypeVar("Body", bound=BaseModel)


class EngineClient(Protocol):
    """What the gateway needs of an engine (`AsyncEngineClient` in production)."""

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]: ...

    async def abort(self, request_id: str) -> None: ...


@dataclass(frozen=True)
class ServedModel:
    """The model behind the API: its public name, tokenizer and context window."""

    name: str
    tokenizer: Tokenizer
    max_context_tokens: int
    created: int = 0


class ApiError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type_, code=code, param=param)

    def response(self) -> JSONResponse:
        return JSONResponse(
            ErrorResponse(error=self.detail).model_dump(mode="json"), status_code=self.status
        )


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
    _install_error_handlers(app)
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
        outputs = await _Generation.start(self.engine, engine_request)
        created = int(time.time())
        if body.stream:
            return _sse(outputs, self._chat_chunks(outputs, body, created))
        text, finish_reason = await _collect_while_connected(request, outputs)
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
        outputs = await _Generation.start(self.engine, engine_request)
        created = int(time.time())
        if body.stream:
            return _sse(outputs, self._completion_chunks(outputs, body, created))
        text, finish_reason = await _collect_while_connected(request, outputs)
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
        self, outputs: _Generation, body: ChatCompletionRequest, created: int
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
                reason = _finish_reason(out.finish_reason)
                yield chunk([ChatChunkChoice(delta=ChatDelta(), finish_reason=reason)])
        if body.include_usage:
            yield chunk([], outputs.usage())

    async def _completion_chunks(
        self, outputs: _Generation, body: CompletionRequest, created: int
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
                reason = _finish_reason(out.finish_reason) if out.finished else None
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


class _Generation:
    """One request's output stream, started (so start-up errors become HTTP errors) and
    accounted: the text and finish reason so far, and the final metrics."""

    def __init__(self, request: EngineRequest, stream: AsyncIterator[RequestOutput]) -> None:
        self.request = request
        self.request_id = request.request_id
        self._stream = stream
        self._first: RequestOutput | None = None
        self.num_completion_tokens = 0
        self.metrics: RequestMetrics | None = None

    @classmethod
    async def start(cls, engine: EngineClient, request: EngineRequest) -> _Generation:
        """Submit the request and wait for its first output; raises what the engine raised."""
        generation = cls(request, engine.generate(request))
        try:
            generation._first = await anext(generation._stream)
        except BaseException:
            await generation.aclose()
            raise
        return generation

    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield self._account(first)
                if first.finished:
                    return
            async for out in self._stream:
                yield self._account(out)
        finally:
            await self.aclose()

    async def collect(self) -> tuple[str, str | None]:
        """The whole completion text and its OpenAI finish reason."""
        parts, reason = [], None
        async for out in self:
            parts.append(out.text_delta)
            if out.finished:
                reason = _finish_reason(out.finish_reason)
        return "".join(parts), reason

    def usage(self) -> Usage:
        m = self.metrics
        prompt_tokens = m.num_prompt_tokens if m else len(self.request.prompt_token_ids)
        completion_tokens = m.num_completion_tokens if m else self.num_completion_tokens
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(
                cached_tokens=m.num_cached_tokens if m else 0
            ),
        )

    async def aclose(self) -> None:
        """Stop the stream; aborts the request in the engine if it has not finished."""
        close: Callable[[], Awaitable[None]] | None = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()

    def _account(self, out: RequestOutput) -> RequestOutput:
        self.num_completion_tokens += len(out.new_token_ids)
        if out.metrics is not None:
            self.metrics = out.metrics
        return out


async def _collect_while_connected(
    request: Request, outputs: _Generation
) -> tuple[str, str | None]:
    """`outputs.collect()`, unless the client hangs up first: then the request is aborted
    in the engine (rather than generating for nobody) and ClientGone is raised."""
    collect = asyncio.ensure_future(outputs.collect())
    hang_up = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait((collect, hang_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hang_up.cancel()
        collect.cancel()  # no-op once done
        await asyncio.gather(collect, hang_up, return_exceptions=True)
        await outputs.aclose()
    if collect.cancelled():
        raise ClientGone()
    return collect.result()


class ClientGone(Exception):
    """The client closed the connection before the response was ready."""


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _finish_reason(reason: FinishReason | None) -> str | None:
    return None if reason is None else reason.value


async def _parse(request: Request, schema: type[Body]) -> Body:
    """The JSON body validated against `schema`, whatever the Content-Type says."""
    raw = await request.body()
    try:
        return schema.model_validate_json(raw)
    except ValidationError as e:
        raise _validation_error(e) from e


def _validation_error(e: ValidationError) -> ApiError:
    errors = e.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {first['msg']}")
    loc = [str(p) for p in first["loc"]]
    path = ".".join(loc) or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ApiError(400, f"{path}: {first['msg']}{more}", param=loc[0] if loc else None)


def _json(body: BaseModel) -> Response:
    return Response(body.model_dump_json(), media_type="application/json")


def _sse(generation: _Generation, chunks: AsyncGenerator[BaseModel, None]) -> Response:
    async def events() -> AsyncGenerator[str, None]:
        try:
            async for chunk in chunks:
                yield f"data: {chunk.model_dump_json()}\n\n"
        except (InvalidRequestError, EngineError) as e:
            # The status line is gone already: report the error in-band, as OpenAI does.
            error = _engine_error(e)
            yield f"data: {ErrorResponse(error=error.detail).model_dump_json()}\n\n"
        finally:
            await chunks.aclose()
            await generation.aclose()
        yield "data: [DONE]\n\n"

    return _EventStream(events())


class _EventStream(StreamingResponse):
    """Server-sent events that close their source however the response ends (a client
    that goes away included), so the engine aborts the request at once."""

    def __init__(self, events: AsyncGenerator[str, None]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()


def _engine_error(e: InvalidRequestError | EngineError) -> ApiError:
    if isinstance(e, PromptTooLongError):
        return ApiError(400, str(e), code="context_length_exceeded")
    if isinstance(e, InvalidRequestError):
        return ApiError(400, str(e))
    if isinstance(e, EngineDeadError):
        return ApiError(503, str(e), "server_error", code="engine_unavailable")
    return ApiError(500, str(e), "server_error", code="engine_error")


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def engine_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidRequestError | EngineError)
        if isinstance(exc, EngineError):
            logger.warning("engine error on %s: %s", request.url.path, exc)
        return _engine_error(exc).response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = ApiError(exc.status_code, str(exc.detail), code=code)
        return error.response()

    async def client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return ApiError(500, "internal server error", "server_error").response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(InvalidRequestError, engine_error)
    app.add_exception_handler(EngineError, engine_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ClientGone, client_gone)
    app.add_exception_handler(Exception, unexpected)
