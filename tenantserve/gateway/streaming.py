"""A request's outputs from the engine, and the two ways they leave: collected into one
response while the client stays connected, or as server-sent events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from tenantserve.engine.request import EngineRequest, FinishReason, RequestMetrics, RequestOutput
from tenantserve.errors import EngineError, InvalidRequestError
from tenantserve.gateway.engine_client import EngineClient
from tenantserve.gateway.errors import ClientGone, api_error_from_engine
from tenantserve.gateway.schemas import ErrorResponse, PromptTokensDetails, Usage

OnClose = Callable[["Generation"], Awaitable[None]]
T = TypeVar("T")


class Generation:
    """One request's output stream, started (so start-up errors become HTTP errors) and
    accounted: the text and finish reason so far, and the final metrics. `on_close` runs
    exactly once when the stream is closed, however it ends (the slot and rate-limit
    bookkeeping hang on it)."""

    def __init__(
        self,
        request: EngineRequest,
        stream: AsyncIterator[RequestOutput],
        on_close: OnClose | None = None,
    ) -> None:
        self.request = request
        self.request_id = request.request_id
        self._stream = stream
        self._first: RequestOutput | None = None
        self._on_close = on_close
        self.num_completion_tokens = 0
        self.metrics: RequestMetrics | None = None
        # True when the engine failed mid-stream (not when the client left).
        self.failed = False
        # What the engine raised before the first output (the request never ran).
        self.start_error: BaseException | None = None
        # Unix time of the first output carrying tokens.
        self.first_token_at: float | None = None
        # The text so far, kept only when set to a list (content logging opted in).
        self.text_parts: list[str] | None = None

    @classmethod
    async def start(
        cls, engine: EngineClient, request: EngineRequest, on_close: OnClose | None = None
    ) -> Generation:
        """Submit the request and wait for its first output; raises what the engine raised
        (after closing, so `on_close` has run)."""
        generation = cls(request, engine.generate(request), on_close)
        try:
            generation._first = await anext(generation._stream)
        except BaseException as e:
            generation.start_error = e
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
        except EngineError:
            self.failed = True
            raise
        finally:
            await self.aclose()

    async def collect(self) -> tuple[str, str | None]:
        """The whole completion text and its OpenAI finish reason."""
        parts, reason = [], None
        async for out in self:
            parts.append(out.text_delta)
            if out.finished:
                reason = openai_finish_reason(out.finish_reason)
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
        """Stop the stream (aborting the request in the engine if it has not finished), then
        run `on_close` if it has not run yet."""
        close: Callable[[], Awaitable[None]] | None = getattr(self._stream, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                await on_close(self)

    def _account(self, out: RequestOutput) -> RequestOutput:
        if out.new_token_ids and self.first_token_at is None:
            self.first_token_at = time.time()
        self.num_completion_tokens += len(out.new_token_ids)
        if self.text_parts is not None and out.text_delta:
            self.text_parts.append(out.text_delta)
        if out.metrics is not None:
            self.metrics = out.metrics
        return out


async def collect_while_connected(request: Request, outputs: Generation) -> tuple[str, str | None]:
    """`outputs.collect()`, unless the client hangs up first: then the request is aborted
    in the engine (rather than generating for nobody) and ClientGone is raised."""
    try:
        return await await_while_connected(request, outputs.collect())
    finally:
        await outputs.aclose()


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def openai_finish_reason(reason: FinishReason | None) -> str | None:
    """The engine's finish reason as OpenAI spells it; None while unfinished."""
    return None if reason is None else reason.value


def sse(
    generation: Generation,
    chunks: AsyncGenerator[BaseModel, None],
    headers: dict[str, str] | None = None,
) -> Response:
    """`chunks` as server-sent events ending in `[DONE]`; an error mid-stream goes in-band."""

    async def events() -> AsyncGenerator[str, None]:
        try:
            async for chunk in chunks:
                yield f"data: {chunk.model_dump_json()}\n\n"
        except (InvalidRequestError, EngineError) as e:
            # The status line is gone already: report the error in-band, as OpenAI does.
            error = api_error_from_engine(e)
            yield f"data: {ErrorResponse(error=error.detail).model_dump_json()}\n\n"
        finally:
            await chunks.aclose()
            await generation.aclose()
        yield "data: [DONE]\n\n"

    return EventStream(events(), headers)


async def await_while_connected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, unless the client hangs up first: then `work` is cancelled (which
    closes its upstream connection) and ClientGone is raised.

    `work` runs in the caller's task; one watcher task waits for the disconnect and
    cancels the caller (the cancellation is taken back before ClientGone is raised)."""
    caller = asyncio.current_task()
    if caller is None:  # not in a task: nothing to cancel, just wait
        return await work
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _wait_for_disconnect(request)
        gone = True
        caller.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        caller.uncancel()
        raise ClientGone() from None
    finally:
        if not watcher.done():
            watcher.cancel()


class EventStream(StreamingResponse):
    """Server-sent events that close their source however the response ends (a client
    that goes away included), so the engine (or the upstream) aborts the request at once."""

    def __init__(
        self,
        events: AsyncGenerator[str, None] | AsyncGenerator[bytes, None],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()
