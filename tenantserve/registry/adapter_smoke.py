"""The smoke test of an uploaded adapter: does it load into a real engine, generate, and
change what the base model says?

    SmokeTester           async run(adapter_dir, base_model_dir, base_model) -> SmokeReport
    └── EngineSmokeTester  greedy tokens on fixed prompts, without and with the adapter

Runs after the file checks (`lora_files`), so what it finds is what only the engine can:
loading errors, non-finite values met while generating (the engine's own error), and an
adapter that changes nothing (lora_B all zeros).
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from tenantserve.engine.request import EngineRequest, LoraRef, RequestOutput, SamplingParams
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import EngineError, InvalidRequestError, TenantServeError

SMOKE_TENANT_ID = "system-smoke"
SMOKE_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
)
SMOKE_MAX_TOKENS = 8
DEFAULT_TIMEOUT_S = 120.0
NO_CHANGE_REPORT = "the adapter does not change the model's output (lora_B is all zeros?)"


class EngineClient(Protocol):
    """What the smoke test needs of an engine: the part of the gateway's `EngineClient`
    protocol it uses (`AsyncEngineClient` in production)."""

    def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]: ...


class SmokeReport(NamedTuple):
    """The verdict: ok, or the tenant-facing reason it is not."""

    ok: bool
    report: str | None = None


class SmokeTester(ABC):
    """Loads an adapter into an engine serving its base model and checks what it does."""

    @abstractmethod
    async def run(self, adapter_dir: Path, base_model_dir: Path, base_model: str) -> SmokeReport:
        """The verdict on the adapter in `adapter_dir` for `base_model` (`name@version`,
        whose files are in `base_model_dir`); never raises for the adapter's faults."""


class EngineSmokeTester(SmokeTester):
    """Greedy `SMOKE_MAX_TOKENS` tokens on `SMOKE_PROMPTS`, first by the base model, then with
    the adapter (a fresh adapter id per run, tenant `system-smoke`, a cache salt of its own:
    nothing is shared with a tenant's cache). Fails when the engine refuses or fails the
    adapter (its message), or when no token changes."""

    def __init__(
        self,
        engine_for: Callable[[str], EngineClient | None],
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        # The engine serving a base model (`name@version`), None when none here does.
        self._engine_for = engine_for
        self._timeout_s = timeout_s

    async def run(self, adapter_dir: Path, base_model_dir: Path, base_model: str) -> SmokeReport:
        engine = self._engine_for(base_model)
        if engine is None:
            return SmokeReport(
                False, f"no engine here serves {base_model}; the adapter cannot be tested"
            )
        prompts = await asyncio.to_thread(_prompt_ids, base_model_dir)
        run_id = uuid.uuid4().hex
        lora = LoraRef(adapter_id=f"smoke-{run_id}", path=str(adapter_dir))
        try:
            async with asyncio.timeout(self._timeout_s):
                base = [await _greedy(engine, p, None, run_id, i) for i, p in enumerate(prompts)]
                adapted = []
                for i, p in enumerate(prompts):
                    adapted.append(await _greedy(engine, p, lora, run_id, i))
        except TimeoutError:
            return SmokeReport(False, f"the smoke test timed out after {self._timeout_s:g} s")
        except InvalidRequestError as e:
            return SmokeReport(False, f"the engine refused the adapter: {_scrub(e, adapter_dir)}")
        except EngineError as e:
            return SmokeReport(
                False, f"the engine failed with the adapter: {_scrub(e, adapter_dir)}"
            )
        if base == adapted:
            return SmokeReport(False, NO_CHANGE_REPORT)
        return SmokeReport(True)


async def _greedy(
    engine: EngineClient, prompt: Sequence[int], lora: LoraRef | None, run_id: str, index: int
) -> tuple[int, ...]:
    which = "lora" if lora is not None else "base"
    request = EngineRequest(
        request_id=f"smoke-{run_id}-{which}-{index}",
        prompt_token_ids=tuple(prompt),
        sampling=SamplingParams(max_tokens=SMOKE_MAX_TOKENS, temperature=0.0, ignore_eos=True),
        tenant_id=SMOKE_TENANT_ID,
        lora=lora,
        cache_salt=f"{SMOKE_TENANT_ID}:{run_id}",
    )
    tokens: list[int] = []
    async for out in engine.generate(request):
        tokens.extend(out.new_token_ids)
    return tuple(tokens)


def _prompt_ids(base_model_dir: Path) -> list[list[int]]:
    """The prompts in the base model's own tokens; fixed small ids when it has no tokenizer."""
    try:
        tokenizer = Tokenizer(base_model_dir)
    except TenantServeError:
        return [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]
    return [tokenizer.encode(p) or [0] for p in SMOKE_PROMPTS]


def _scrub(error: Exception, adapter_dir: Path) -> str:
    """The engine's message without our directory names (tenants see it)."""
    return str(error).replace(f"{adapter_dir}/", "").replace(str(adapter_dir), "the adapter")
