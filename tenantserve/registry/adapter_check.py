"""The check step of an adapter upload: the received files against the base model they
name, before anything is recorded (`adapter_service.py`).

    config     adapter_config.json and the safetensors header (size, not truncated;
               `adapter_upload.py`)
    base       the base model it names, or the form's `base_model`, resolved for the
               tenant (another tenant's private version does not exist) and allowed to
               the caller's key; its checkpoint's config must take LoRA adapters
    tensors    every tensor against the base model's geometry and `max_lora_rank`,
               finite values (`engine/lora_files.py`); messages name no server path

A passed check is a `CheckedUpload`: the base version, its local copy, the adapter's rank
and target modules, and the files' manifest.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from tenantserve.engine.lora_files import CONFIG_FILE, WEIGHTS_FILE, read_adapter
from tenantserve.engine.models.checkpoint import read_config
from tenantserve.engine.models.llama import LlamaConfig
from tenantserve.errors import (
    AdapterError,
    CheckpointError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from tenantserve.registry.adapter_upload import check_safetensors_header, read_config_json
from tenantserve.registry.artifact_cache import ArtifactCache
from tenantserve.registry.artifacts import hash_source, scan_source
from tenantserve.registry.model import ArtifactFile, ModelVersion
from tenantserve.registry.naming import ModelRef
from tenantserve.registry.service import RegistryService
from tenantserve.tenancy.model import TenantContext


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that passed every file check."""

    base: ModelVersion
    base_dir: Path
    rank: int
    target_modules: tuple[str, ...]
    manifest: tuple[ArtifactFile, ...]


async def check_upload(
    ctx: TenantContext,
    files_dir: Path,
    base_model: str | None,
    *,
    registry: RegistryService,
    cache: ArtifactCache,
    max_lora_rank: int,
) -> CheckedUpload:
    """Check the received files in `files_dir` against their base model (`base_model`
    overrides the config's `base_model_name_or_path`); InvalidRequestError, AdapterError
    or PermissionDeniedError naming the problem."""
    config = await asyncio.to_thread(read_config_json, files_dir / CONFIG_FILE)
    await asyncio.to_thread(check_safetensors_header, files_dir / WEIGHTS_FILE)
    base = await _base_model(registry, ctx, base_model or config.get("base_model_name_or_path"))
    base_dir = await cache.pull(base)
    model_cfg = await asyncio.to_thread(_model_config, base_dir, base.ref)
    try:
        weights = await asyncio.to_thread(
            read_adapter, "upload", files_dir, model_cfg, max_lora_rank
        )
    except AdapterError as e:
        raise AdapterError(_scrub(str(e), files_dir)) from None
    manifest = await asyncio.to_thread(lambda: hash_source(scan_source(files_dir)))
    return CheckedUpload(
        base=base,
        base_dir=base_dir,
        rank=weights.rank,
        target_modules=tuple(sorted(weights.target_modules)),
        manifest=tuple(manifest),
    )


async def _base_model(registry: RegistryService, ctx: TenantContext, ref: object) -> ModelVersion:
    if not isinstance(ref, str) or not ref:
        raise InvalidRequestError(
            f"name the base model: {CONFIG_FILE}'s base_model_name_or_path, or the "
            "form field base_model (a catalog model: name or name@version)"
        )
    try:
        parsed = ModelRef.parse(ref)
        version = (await registry.resolve(str(parsed), ctx.tenant_id)).version
    except NotFoundError:
        raise InvalidRequestError(f"base model {ref!r} does not exist") from None
    except InvalidRequestError as e:
        raise InvalidRequestError(f"base model {ref!r} is not a catalog model ({e})") from None
    if not (ctx.allows_model(version.name) or ctx.allows_model(version.ref)):
        raise PermissionDeniedError(f"this API key may not use base model {version.name}")
    return version


def _model_config(base_dir: Path, ref: str) -> LlamaConfig:
    try:
        return read_config(base_dir)
    except CheckpointError as e:
        raise InvalidRequestError(f"base model {ref} cannot take LoRA adapters ({e})") from None


def _scrub(message: str, files_dir: Path) -> str:
    """An engine-side message without the upload's directory (tenants see it)."""
    return message.replace(f"{files_dir}/", "").replace(str(files_dir), "the upload")
