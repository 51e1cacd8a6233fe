"""Running an eval set against one version: each item's prompt answered with greedy
decoding by a `Completer`, scored by its rule, a bounded number of items at a time.

    Completer          async complete(messages, max_tokens) -> the answer's text
    ├── EngineCompleter  an engine and its tokenizer (the chat template), optionally with a
    │                    LoRA adapter: what the built-in engine pool serving the version runs
    └── (gateway/eval_targets.py) UpstreamCompleter: an upstream pool's OpenAI server

The server evaluates in process, through the pool the resolver binds the version to (the
same engine, or the same upstream server, that serves the version's requests), rather than
through its own HTTP API: no tenant key, quota, rate limit or bill is involved, and a canary
version is evaluated itself (its pool, not the plain name's route). Evaluation requests run
as tenant `system-eval` with a cache salt of their own, so no tenant's prefix cache is
touched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from tenantserve.engine.request import EngineRequest, LoraRef, SamplingParams
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import TenantServeError
from tenantserve.registry.adapter_smoke import EngineClient
from tenantserve.registry.evals import (
    EvalItem,
    EvalResult,
    EvalSet,
    ItemOutcome,
    new_eval_result_id,
    score_item,
)

EVAL_TENANT_ID = "system-eval"
DEFAULT_CONCURRENCY = 4
DEFAULT_ITEM_TIMEOUT_S = 120.0


class Completer(Protocol):
    """Answers one chat prompt with greedy decoding; raises on failure."""

    async def complete(self, messages: Sequence[dict[str, str]], max_tokens: int) -> str: ...


class EngineCompleter:
    """A `Completer` over an engine: the prompt through the model's chat template, greedy
    tokens until EOS or `max_tokens`, the engine's own detokenized text."""

    def __init__(
        self, engine: EngineClient, tokenizer: Tokenizer, lora: LoraRef | None = None
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._lora = lora
        self._salt = f"{EVAL_TENANT_ID}:{uuid.uuid4().hex}"

    async def complete(self, messages: Sequence[dict[str, str]], max_tokens: int) -> str:
        prompt = await asyncio.to_thread(self._tokenizer.encode_chat, messages)
        request = EngineRequest(
            request_id=f"eval-{uuid.uuid4().hex}",
            prompt_token_ids=tuple(prompt),
            sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
            tenant_id=EVAL_TENANT_ID,
            lora=self._lora,
            cache_salt=self._salt,
        )
        text: list[str] = []
        async for out in self._engine.generate(request):
            if out.error:
                raise TenantServeError(out.error)
            text.append(out.text_delta)
        return "".join(text)


class EvalRunner:
    """Runs sets with at most `concurrency` items in flight and a deadline per item."""

    def __init__(
        self,
        clock: Callable[[], datetime],
        concurrency: int = DEFAULT_CONCURRENCY,
        item_timeout_s: float = DEFAULT_ITEM_TIMEOUT_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._clock = clock
        self.concurrency = concurrency
        self.item_timeout_s = item_timeout_s

    async def run(
        self,
        eval_set: EvalSet,
        completer: Completer,
        ref: str,
        tenant_id: str | None = None,
    ) -> EvalResult:
        """Every item of `eval_set` answered by `completer` and scored; an item whose
        generation fails or times out is failed with the error (never raises for it)."""
        limit = asyncio.Semaphore(self.concurrency)

        async def one(item: EvalItem) -> ItemOutcome:
            async with limit:
                try:
                    async with asyncio.timeout(self.item_timeout_s):
                        answer = await completer.complete(item.chat, item.max_tokens)
                except TimeoutError:
                    return score_item(item, None, f"timed out after {self.item_timeout_s:g} s")
                except Exception as e:  # the version's failure is the item's outcome
                    return score_item(item, None, f"{type(e).__name__}: {e}")
                return score_item(item, answer)

        outcomes = await asyncio.gather(*(one(item) for item in eval_set.items))
        return EvalResult(
            id=new_eval_result_id(),
            ref=ref,
            set_name=eval_set.name,
            set_digest=eval_set.digest,
            outcomes=tuple(outcomes),
            at=self._clock(),
            tenant_id=tenant_id,
        )
