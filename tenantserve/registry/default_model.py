"""The default model (SmolLM2-135M-Instruct, converted by `engine/models/convert.py`) in the
catalog: `register_default_model` registers it at first start and is a no-op afterwards."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tenantserve.registry.artifacts import Progress, scan_source
from tenantserve.registry.model import ModelFormat, ModelVersion, Quantization, version_key
from tenantserve.registry.service import RegistryService

DEFAULT_MODEL_REGISTRY_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL_FIRST_VERSION = "1.0.0"


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
