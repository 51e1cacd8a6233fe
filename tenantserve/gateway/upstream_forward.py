"""An admitted request run on its upstream pool: the client's own JSON forwarded
(`gateway/upstream.py`) with the upstream's model name and the admitted max_tokens, the
reply relayed whole or as server-sent events, and the admission closed with the
upstream's usage (else our estimate).

Fields a backend schedules or caches by (`GATEWAY_OWNED_FIELDS`) are the gateway's: a
client's are dropped, and a vLLM pool sets the tenant's own. A whole reply's usage event
is durable before the answer leaves; the rate-limit commit runs after it has left.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from tenantserve.gateway.admitted import FAILED_AT_START, NEVER_RAN, Admission, Outcome
from tenantserve.gateway.dispatch import Body, Dispatcher
from tenantserve.gateway.engine_start import is_failure
from tenantserve.gateway.pools import UpstreamPool
from tenantserve.gateway.streaming import EventStream, await_while_connected
from tenantserve.gateway.upstream import UpstreamUsage
from tenantserve.metering.events import UsageStatus

# vLLM's `priority` would let a client jump its tier; its `cache_salt` would let it pick
# the prefix-cache partition it shares. Neither is forwarded as the client sent it.
GATEWAY_OWNED_FIELDS = ("priority", "cache_salt")


async def forward(
    request: Request,
    dispatcher: Dispatcher,
    admission: Admission,
    raw: bytes,
    body: Body,
    path: str,
) -> Response:
    """Run an admitted request on its upstream pool: the client's own JSON forwarded
    with the upstream's model name and the admitted max_tokens, less the fields only
    the gateway may set."""
    pool = admission.pool
    assert isinstance(pool, UpstreamPool)
    target = admission.decision.route.target
    payload = json.loads(raw)
    for field in GATEWAY_OWNED_FIELDS:  # a vLLM pool sets its own in prepare()
        payload.pop(field, None)
    payload["model"] = pool.upstream_name(target)
    if "max_completion_tokens" in payload:
        payload["max_completion_tokens"] = admission.max_tokens
    if "max_completion_tokens" not in payload or "max_tokens" in payload:
        payload["max_tokens"] = admission.max_tokens
    prefix = "chatcmpl" if path == "/chat/completions" else "cmpl"
    rewrite = {"id": f"{prefix}-{admission.request_id}", "model": target}
    started = time.perf_counter()
    try:  # the backend's own fields (a vLLM pool: tenant salt, priority, adapter)
        release = await pool.prepare(payload, admission.ctx, admission.lora)
    except BaseException as e:
        await admission.close(_failed(e))
        raise
    if body.stream:
        return await _forward_stream(admission, pool, path, payload, rewrite, body, release)
    try:
        reply = await await_while_connected(
            request, pool.upstream.complete(path, payload, admission.request_id, rewrite)
        )
    except BaseException as e:
        await admission.close(_failed(e))
        raise
    finally:
        release()
    upstream_s = time.perf_counter() - started
    if dispatcher.mirrors(admission):  # only then is the reply read again
        text = _reply_text(reply.body)
        dispatcher.mirror(admission, body, raw, None, path, text)
    outcome = _upstream_outcome(admission, reply.usage, upstream_s, UsageStatus.COMPLETED)
    if admission.ctx.log_content:
        outcome = replace(outcome, completion_text=_reply_text(reply.body))
    await admission.meter(outcome)  # the usage event is durable before the answer
    headers = server_timing(admission, upstream_s)
    # The commit (a Redis round trip) runs after the response has left.
    done = BackgroundTask(admission.close, outcome)
    return Response(reply.body, media_type="application/json", headers=headers, background=done)


async def _forward_stream(
    admission: Admission,
    pool: UpstreamPool,
    path: str,
    payload: dict[str, Any],
    rewrite: dict[str, str],
    body: Body,
    release: Callable[[], None],
) -> Response:
    usage: list[UpstreamUsage] = []
    started = time.perf_counter()
    try:
        events = await pool.upstream.stream(
            path, payload, admission.request_id, rewrite, body.include_usage, usage
        )
    except BaseException as e:
        release()
        await admission.close(_failed(e))
        raise

    async def relay() -> AsyncGenerator[bytes, None]:
        ttft_s: float | None = None
        status = UsageStatus.CANCELLED  # unless the stream runs to its end
        chunks = 0  # what a stream cut short is billed for: a token per chunk sent
        try:
            async for event in events:
                if ttft_s is None:
                    ttft_s = time.perf_counter() - started
                yield event
                chunks += 1
            status = UsageStatus.COMPLETED
        except BaseException as e:
            if is_failure(e):
                status = UsageStatus.ERROR
            raise
        finally:
            await events.aclose()
            release()
            used = usage[-1] if usage else None
            outcome = _upstream_outcome(admission, used, ttft_s, status, chunks)
            await admission.close(outcome)

    return EventStream(relay(), server_timing(admission))


def server_timing(admission: Admission, upstream_s: float | None = None) -> dict[str, str]:
    """The `server-timing` header: time in admission (and at the upstream), in ms."""
    timing = f"admission;dur={admission.admission_s * 1000:.3f}"
    if upstream_s is not None:
        timing += f", upstream;dur={upstream_s * 1000:.3f}"
    return {**admission.headers, "server-timing": timing}


def _reply_text(body: bytes) -> str | None:
    """The text of an upstream's (rewritten) completion, for shadow comparison."""
    try:
        choice = json.loads(body)["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    message = choice.get("message")
    return str((message or {}).get("content") or choice.get("text") or "")


def _failed(e: BaseException) -> Outcome:
    """The outcome of a forward that raised before any answer."""
    return FAILED_AT_START if is_failure(e) else NEVER_RAN


def _upstream_outcome(
    admission: Admission,
    usage: UpstreamUsage | None,
    ttft_s: float | None,
    status: UsageStatus,
    chunks_sent: int | None = None,
) -> Outcome:
    """What an upstream request used: the upstream's own usage report, else our estimate
    (the prompt as counted at admission; a token per chunk sent of a stream cut short,
    else max_tokens)."""
    first_token_at = admission.started_wall + admission.admission_s + ttft_s if ttft_s else None
    if usage is None:
        sent = admission.max_tokens if chunks_sent is None else chunks_sent
        return Outcome(
            prompt_tokens=admission.num_prompt_tokens,
            completion_tokens=min(sent, admission.max_tokens),
            ttft_s=ttft_s,
            first_token_at=first_token_at,
            status=status,
        )
    return Outcome(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        ttft_s=ttft_s,
        first_token_at=first_token_at,
        status=status,
    )
