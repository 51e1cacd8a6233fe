"""What evaluates a version "on the serving path": the pool the resolver binds the version
to. The built-in engine's pool answers with its engine and tokenizer (`EngineCompleter`,
with a tenant adapter's files as the LoRA when given); an upstream pool with its OpenAI
server (`UpstreamCompleter`: the chat completion with temperature 0)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from tenantserve.engine.request import LoraRef
from tenantserve.errors import TenantServeError
from tenantserve.gateway.pools import EnginePool, UpstreamPool
from tenantserve.gateway.resolver import ModelResolver
from tenantserve.gateway.upstream import OpenAIUpstream
from tenantserve.registry.eval_runner import Completer, EngineCompleter


class UpstreamCompleter:
    """A `Completer` over an upstream pool's server, as its `upstream_name` model."""

    def __init__(self, upstream: OpenAIUpstream, model: str) -> None:
        self._upstream = upstream
        self._model = model

    async def complete(self, messages: Sequence[dict[str, str]], max_tokens: int) -> str:
        body = {
            "model": self._model,
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        reply = await self._upstream.complete(
            "/v1/chat/completions", body, f"eval-{uuid.uuid4().hex}", {}
        )
        try:
            content = json.loads(reply.body)["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise TenantServeError(f"the upstream's answer has no message ({e})") from e
        return str(content or "")


class PoolTargets:
    """`targets(ref, lora)` for `EvalService`: the completer of the pool serving `ref`."""

    def __init__(self, resolver: ModelResolver) -> None:
        self._resolver = resolver

    def __call__(self, ref: str, lora: LoraRef | None) -> Completer | None:
        pool = self._resolver.pool_of(ref)
        if isinstance(pool, EnginePool):
            return EngineCompleter(pool.engine, pool.model.tokenizer, lora)
        if isinstance(pool, UpstreamPool) and lora is None:
            return UpstreamCompleter(pool.upstream, pool.upstream_name(ref))
        return None
