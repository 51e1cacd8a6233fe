"""The default model (SmolLM2-135M-Instruct, converted by `engine/models/convert.py`) in the
catalog: `register_default_model` registers it at first start and is a no-op afterwards;
`register_default_golden_set` attaches its shipped golden set (`golden/smollm2.json`)."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from pathlib import Path

from tenantserve.registry.artifacts import Progress, scan_source
from tenantserve.registry.eval_service import EvalService
from tenantserve.registry.evals import EvalSet, StoredEvalSet
from tenantserve.registry.model import ModelFormat, ModelVersion, Quantization
from tenantserve.registry.naming import version_key
from tenantserve.registry.service import RegistryService

DEFAULT_MODEL_REGISTRY_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL_FIRST_VERSION = "1.0.0"
GOLDEN_SET_FILE = "golden/smollm2.json"


async def register_default_model(
    service: RegistryService,
    model_dir: Path,
    progress: Progress | None = None,
    name: str = DEFAULT_MODEL_REGISTRY_NAME,
) -> ModelVersion:
    """The catalog's version of the checkpoint in `model_dir` (under `name`: the default
    model's unless another checkpoint is served), registered when absent.

    Cheap when present: a version whose files have the checkpoint's paths and sizes is
    taken as it (nothing is hashed). Otherwise the checkpoint is registered as 1.0.0, or,
    when versions with other content exist (a re-conversion that changed bytes), as the
    next patch version above the newest (one model keeps one version scheme).
    """
    files = await asyncio.to_thread(scan_source, Path(model_dir))
    shape = sorted((f.path, f.size_bytes) for f in files)
    versions = await service.list(name)
    for v in reversed(versions):
        if sorted((f.path, f.size_bytes) for f in v.files) == shape:
            return v
    version = DEFAULT_MODEL_FIRST_VERSION
    if versions:
        major, minor, patch = max(version_key(v.version).parts for v in versions)
        version = f"{major}.{minor}.{patch + 1}"
    result = await service.register(
        Path(model_dir),
        name,
        version,
        format=ModelFormat.SAFETENSORS,
        quantization=Quantization.FP32,
        progress=progress,
    )
    return result.version


def default_golden_set() -> EvalSet:
    """The golden set shipped for the default model (`golden/smollm2.json`)."""
    text = resources.files("tenantserve.registry").joinpath(GOLDEN_SET_FILE).read_text()
    return EvalSet.from_json(json.loads(text))


async def register_default_golden_set(
    evals: EvalService, name: str = DEFAULT_MODEL_REGISTRY_NAME
) -> StoredEvalSet | None:
    """Attach the shipped golden set to the default model (every version) at first start;
    a no-op once it has a set of that name (an operator's replacement is kept)."""
    return await evals.ensure_model_set(name, default_golden_set())
