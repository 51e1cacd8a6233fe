"""The smoke test of a model version before it is rolled out: pulled from the artifact
store to this node (verified by digest), loaded into a real engine of its own, asked for a
few greedy tokens on fixed prompts. A version that does not load, fails while generating,
or generates nothing does not start a rollout; the report names the problem."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.config import CacheConfig, EngineConfig
from tenantserve.engine.request import EngineRequest, SamplingParams
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import TenantServeError
from tenantserve.registry.adapter_smoke import (
    SMOKE_MAX_TOKENS,
    SMOKE_PROMPTS,
    SMOKE_TENANT_ID,
    SmokeReport,
)
from tenantserve.registry.artifact_cache import ArtifactCache
from tenantserve.registry.model import ModelFormat, ModelVersion

DEFAULT_TIMEOUT_S = 300.0
SMOKE_KV_CACHE_BYTES = 64 << 20


def smoke_engine_config(model_dir: Path) -> EngineConfig:
    """A small engine: enough KV cache for the smoke prompts, nothing more."""
    return EngineConfig(model_dir=model_dir, cache=CacheConfig(kv_cache_bytes=SMOKE_KV_CACHE_BYTES))


class ModelSmokeTester:
    def __init__(
        self,
        cache: ArtifactCache,
        engine_config: Callable[[Path], EngineConfig] = smoke_engine_config,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.cache = cache
        self.engine_config = engine_config
        self.timeout_s = timeout_s

    async def run(self, version: ModelVersion) -> SmokeReport:
        if version.format is not ModelFormat.SAFETENSORS:
            return SmokeReport(False, f"the built-in engine cannot load {version.format.value}")
        try:
            model_dir = await self.cache.pull(version)
            engine = AsyncEngineClient(self.engine_config(model_dir))
        except (TenantServeError, OSError) as e:
            return SmokeReport(False, f"cannot get {version.ref}: {e}")
        try:
            async with asyncio.timeout(self.timeout_s):
                await engine.start()
                return await _generate(engine, Tokenizer(model_dir))
        except TimeoutError:
            return SmokeReport(False, f"the smoke test timed out after {self.timeout_s:g} s")
        except Exception as e:  # the model's own failure, whatever it is, is the report
            return SmokeReport(False, f"{version.ref} failed to load or generate: {e}")
        finally:
            await engine.shutdown()


async def _generate(engine: AsyncEngineClient, tokenizer: Tokenizer) -> SmokeReport:
    for prompt in SMOKE_PROMPTS:
        request = EngineRequest(
            request_id=f"smoke-model-{uuid.uuid4().hex}",
            prompt_token_ids=tuple(tokenizer.encode(prompt)),
            sampling=SamplingParams(max_tokens=SMOKE_MAX_TOKENS, temperature=0.0),
            tenant_id=SMOKE_TENANT_ID,
            cache_salt=f"smoke-{uuid.uuid4().hex}",
        )
        tokens = 0
        async for out in engine.generate(request):
            if out.error:
                return SmokeReport(False, f"generation failed: {out.error}")
            tokens += len(out.new_token_ids)
        if tokens == 0:
            return SmokeReport(False, f"no tokens generated for {prompt!r}")
    return SmokeReport(True)
