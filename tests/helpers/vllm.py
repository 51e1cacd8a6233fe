"""A real vLLM server (CPU build, its own venv: `make test-vllm`) started by tenantserve's
`VllmLauncher` on SmolLM2-135M, for the tests marked `vllm`.

vLLM's interpreter: TENANTSERVE_VLLM_PYTHON (default .venv-vllm/bin/python). Missing, the
tests skip with the reason, except under CI=true, where they fail (without TENANTSERVE_VLLM=1
they are deselected, never run).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tenantserve.engine_vllm.launcher import VllmLauncher
from tenantserve.pool_config import VllmLaunchConfig
from tests.helpers.services import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_MODEL = "smol-vllm"  # the name tenants call the vLLM server's base model by
VLLM_MAX_LORAS = 2


def vllm_enabled() -> bool:
    """`make test-vllm` sets TENANTSERVE_VLLM=1; elsewhere `vllm` tests are deselected."""
    return os.environ.get("TENANTSERVE_VLLM") == "1"


def vllm_python() -> Path:
    """vLLM's interpreter, or a skip (a failure under CI=true with TENANTSERVE_VLLM=1)."""
    path = Path(os.environ.get("TENANTSERVE_VLLM_PYTHON", REPO_ROOT / ".venv-vllm/bin/python"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        unavailable(f"no vLLM interpreter at {path} (make test-vllm installs it)")
    return path


@asynccontextmanager
async def running_vllm(model_dir: Path, log: Path) -> AsyncIterator[VllmLauncher]:
    """The vLLM server on `model_dir` (about a minute to start on 2 CPU cores)."""
    python = vllm_python()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache
    launch = VllmLaunchConfig(
        model=model_dir,
        python=python,
        args=("--max-model-len", "2048", "--dtype", "bfloat16"),
        start_timeout_s=600,
    )
    launcher = VllmLauncher(launch, (VLLM_MODEL,), log, max_loras=VLLM_MAX_LORAS, max_lora_rank=16)
    await launcher.start()
    print(f"\nvLLM started in {launcher.start_s:.1f} s (log: {log})")
    try:
        yield launcher
    finally:
        await launcher.stop()
