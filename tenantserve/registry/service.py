"""Model registry use cases: register a version (its files streamed into the artifact
store), list and read versions, deprecate, archive, change scope, resolve a request's model.

`register` is immutable-by-content: the same `name@version` with the same files and
metadata is a no-op (idempotent), with anything else it is refused before a byte is
uploaded. The row is written only after every file is stored, so a version in the
catalog always has complete artifacts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.artifacts import (
    ArtifactStore,
    Progress,
    SourceFile,
    artifact_key,
    hash_source,
    scan_source,
)
from tenantserve.registry.model import (
    Device,
    ModelFormat,
    ModelStatus,
    ModelVersion,
    Quantization,
    Resolution,
    VersionConflictError,
    manifest_digest,
    parse_device,
    parse_format,
    parse_quantization,
    parse_status,
    resolve,
)
from tenantserve.registry.naming import (
    ModelRef,
    validate_name,
    validate_runtimes,
    validate_scope,
    validate_version,
    version_key,
)
from tenantserve.registry.repository import DuplicateVersionError
from tenantserve.registry.unit_of_work import RegistryUnitOfWork

DEFAULT_RUNTIMES = ("tenantserve",)
# config.json `torch_dtype` / `dtype` → quantization of a safetensors checkpoint.
_DTYPE_QUANTIZATION = {
    "float32": Quantization.FP32,
    "bfloat16": Quantization.BF16,
    "float16": Quantization.FP16,
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class RegisterResult(NamedTuple):
    """The registered version, and whether this call created it (False: it existed)."""

    version: ModelVersion
    created: bool


class RegistryService:
    """Catalog use cases over a unit of work and an artifact store."""

    def __init__(
        self,
        uow_factory: Callable[[], RegistryUnitOfWork],
        store: ArtifactStore,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow = uow_factory
        self.store = store
        self._clock = clock

    async def register(
        self,
        source: Path,
        name: str,
        version: str,
        *,
        format: str | ModelFormat | None = None,
        quantization: str | Quantization | None = None,
        runtimes: Iterable[str] = DEFAULT_RUNTIMES,
        min_memory_bytes: int | None = None,
        device: str | Device = Device.ANY,
        status: str | ModelStatus = ModelStatus.ACTIVE,
        scope: str = "public",
        progress: Progress | None = None,
    ) -> RegisterResult:
        """Register the files under `source` (a directory or one file) as `name@version`.

        Hashes them (progress phase "hash"), refuses an existing name@version with other
        content or metadata (VersionConflictError), returns an identical one unchanged,
        else streams the files into the store (phase "upload") and records the version.
        `format` and `quantization` are inferred from the files when not given.
        """
        validate_name(name)
        validate_version(version)
        parsed_status = parse_status(status)
        if parsed_status not in (ModelStatus.ACTIVE, ModelStatus.CANARY):
            raise InvalidRequestError("a new version's status must be active or canary")
        scope = validate_scope(scope)
        parsed_device = parse_device(device)
        runtimes = validate_runtimes(runtimes)
        files = await asyncio.to_thread(_scan, Path(source))
        parsed_format = parse_format(format) if format is not None else _infer_format(files)
        parsed_quant = (
            parse_quantization(quantization)
            if quantization is not None
            else await asyncio.to_thread(_infer_quantization, files, parsed_format)
        )
        manifest = await asyncio.to_thread(hash_source, files, progress)
        digest = manifest_digest(manifest)
        key = artifact_key(name, version, digest)
        now = self._clock()
        candidate = ModelVersion(
            name=name,
            version=version,
            digest=digest,
            format=parsed_format,
            quantization=parsed_quant,
            runtimes=runtimes,
            min_memory_bytes=(
                min_memory_bytes
                if min_memory_bytes is not None
                else sum(f.size_bytes for f in manifest)
            ),
            device=parsed_device,
            status=parsed_status,
            scope=scope,
            created_at=now,
            artifact_uri=self.store.uri(key),
            files=tuple(manifest),
        )
        async with self._uow() as uow:
            siblings = await uow.models.list(name)
        if existing := _find(siblings, version):
            return RegisterResult(_same_or_conflict(existing, candidate), created=False)
        _check_scheme(siblings, version)

        stored = await self.store.put_dir(key, files, progress)
        if sorted(stored, key=lambda f: f.path) != list(candidate.files):
            await self.store.delete(key)
            raise InvalidRequestError(f"the files under {source} changed while registering")
        try:
            async with self._uow() as uow:
                await uow.models.add(candidate)
                await uow.commit()
        except DuplicateVersionError:
            # A concurrent registration of the same name@version won.
            async with self._uow() as uow:
                winner = await uow.models.get(name, version)
            assert winner is not None
            if winner.artifact_uri != candidate.artifact_uri:
                await self.store.delete(key)
            return RegisterResult(_same_or_conflict(winner, candidate), created=False)
        return RegisterResult(candidate, created=True)

    async def list(self, name: str | None = None) -> Sequence[ModelVersion]:
        """Every version (of `name` when given), by name then oldest first."""
        async with self._uow() as uow:
            return await uow.models.list(name)

    async def versions(self, name: str) -> Sequence[ModelVersion]:
        """The versions of one model, oldest first; NotFoundError when there are none."""
        validate_name(name)
        found = await self.list(name)
        if not found:
            raise NotFoundError(f"no model {name!r}; `tenantserve model list` shows them")
        return found

    async def get(self, ref: str) -> ModelVersion:
        """The version `name@version`, or NotFoundError."""
        parsed = _pinned(ref)
        async with self._uow() as uow:
            return await _require(uow, parsed)

    async def deprecate(
        self, ref: str, end_date: date | str, replacement: str | None = None
    ) -> ModelVersion:
        """Deprecate `name@version` until `end_date` (≥ 90 days out); it keeps serving with
        a deprecation warning. `replacement` (`name@version`) is named in that warning."""
        parsed_end = _parse_date(end_date)
        async with self._uow() as uow:
            version = await _require(uow, _pinned(ref))
            instead = await self._replacement(uow, replacement)
            now = self._clock()
            version.deprecate(parsed_end, now, instead)
            await uow.models.update(version, now)
            await uow.commit()
        return version

    async def archive(self, ref: str, replacement: str | None = None) -> ModelVersion:
        """Archive `name@version` (final): requests pinned to it get an error naming the
        replacement (this one, else the one given at deprecation)."""
        async with self._uow() as uow:
            version = await _require(uow, _pinned(ref))
            instead = await self._replacement(uow, replacement)
            now = self._clock()
            version.archive(now, instead)
            await uow.models.update(version, now)
            await uow.commit()
        return version

    async def set_scope(self, ref: str, scope: str) -> ModelVersion:
        """Make a tenant's private version public (a public one never becomes private)."""
        async with self._uow() as uow:
            version = await _require(uow, _pinned(ref))
            version.change_scope(scope)
            await uow.models.update(version, self._clock())
            await uow.commit()
        return version

    async def resolve(self, ref: str, tenant_id: str | None) -> Resolution:
        """The version a request for `ref` (`name` or `name@version`) by `tenant_id` gets,
        with its deprecation warning; NotFoundError / ModelArchivedError otherwise."""
        parsed = ModelRef.parse(ref)
        async with self._uow() as uow:
            versions = await uow.models.list(parsed.name)
        return resolve(parsed, versions, tenant_id)

    async def _replacement(
        self, uow: RegistryUnitOfWork, replacement: str | None
    ) -> ModelVersion | None:
        if replacement is None:
            return None
        parsed = ModelRef.parse(replacement)
        if parsed.version is None:
            raise InvalidRequestError(f"replacement must be name@version, not {replacement!r}")
        found = await uow.models.get(parsed.name, parsed.version)
        if found is None:
            raise InvalidRequestError(f"replacement {replacement} is not registered")
        return found


def _scan(source: Path) -> list[SourceFile]:
    try:
        return scan_source(source)
    except OSError as e:
        raise InvalidRequestError(f"cannot read {source}: {e.strerror or e}") from e


def _infer_format(files: list[SourceFile]) -> ModelFormat:
    suffixes = {Path(f.path).suffix for f in files}
    if ".gguf" in suffixes:
        return ModelFormat.GGUF
    if ".safetensors" in suffixes:
        return ModelFormat.SAFETENSORS
    raise InvalidRequestError(
        "no .safetensors or .gguf file found; pass format (safetensors or gguf)"
    )


def _infer_quantization(files: list[SourceFile], format: ModelFormat) -> Quantization:
    if format is ModelFormat.GGUF:
        for f in files:
            stem = Path(f.path).stem.lower()
            for q in Quantization:
                if stem.endswith(f".{q.value}") or stem.endswith(f"-{q.value}"):
                    return q
    config = next((f for f in files if f.path == "config.json"), None)
    if config is not None:
        try:
            data = json.loads(config.local_path.read_text())
        except (OSError, ValueError):
            data = {}
        dtype = data.get("torch_dtype") or data.get("dtype") if isinstance(data, dict) else None
        if isinstance(dtype, str) and dtype in _DTYPE_QUANTIZATION:
            return _DTYPE_QUANTIZATION[dtype]
    choices = ", ".join(q.value for q in Quantization)
    raise InvalidRequestError(f"cannot tell the weights' quantization; pass one of {choices}")


def _find(versions: Sequence[ModelVersion], version: str) -> ModelVersion | None:
    return next((v for v in versions if v.version == version), None)


def _same_or_conflict(existing: ModelVersion, candidate: ModelVersion) -> ModelVersion:
    differs = existing.same_content(candidate)
    if differs is None:
        return existing
    raise VersionConflictError(
        f"{existing.ref} is already registered with another {differs} "
        f"({getattr(existing, differs)}, not {getattr(candidate, differs)}); versions are "
        "immutable: register the new content under a new version"
    )


def _check_scheme(siblings: Sequence[ModelVersion], version: str) -> None:
    """All versions of one model use one scheme (semver or date tags), so "newest" is clear."""
    scheme = version_key(version).scheme
    other = next((v for v in siblings if version_key(v.version).scheme != scheme), None)
    if other is not None:
        kind = "date tags" if version_key(other.version).scheme == 0 else "semver"
        raise InvalidRequestError(
            f"{other.name} uses {kind} (e.g. {other.version}); version {version!r} does not"
        )


def _pinned(ref: str) -> ModelRef:
    parsed = ModelRef.parse(ref)
    if parsed.version is None:
        raise InvalidRequestError(f"name a version: {parsed.name}@<version>, not {ref!r}")
    return parsed


async def _require(uow: RegistryUnitOfWork, ref: ModelRef) -> ModelVersion:
    assert ref.version is not None
    found = await uow.models.get(ref.name, ref.version)
    if found is None:
        raise NotFoundError(f"model {ref} does not exist")
    return found


def _parse_date(value: date | str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(
            f"end_date must be a date like 2026-11-27, not {value!r}"
        ) from None
