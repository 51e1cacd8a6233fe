"""`ModelRepository` and `AdapterRepository`: model versions and tenant adapters in and out
of the database, as domain objects (rollouts: `rollout_repository.py`).

Works inside the caller's transaction (the unit of work's session); it never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.registry.adapters import Adapter, AdapterStatus
from tenantserve.registry.model import (
    ArtifactFile,
    Device,
    ModelFormat,
    ModelStatus,
    ModelVersion,
    Quantization,
)
from tenantserve.registry.tables import model_versions, tenant_adapters


class DuplicateVersionError(Exception):
    """Another transaction inserted the same name@version first."""


class DuplicateAdapterError(Exception):
    """Another transaction inserted the same (tenant, name, version) first."""


class ModelRepository:
    """Model versions, read and written through one session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, version: ModelVersion) -> None:
        """Insert a new version; DuplicateVersionError when name@version exists (the
        transaction must then be rolled back)."""
        try:
            await self._session.execute(
                insert(model_versions).values(
                    name=version.name,
                    version=version.version,
                    digest=version.digest,
                    format=version.format.value,
                    quantization=version.quantization.value,
                    runtimes=list(version.runtimes),
                    min_memory_bytes=version.min_memory_bytes,
                    device=version.device.value,
                    artifact_uri=version.artifact_uri,
                    files=[_file_json(f) for f in version.files],
                    size_bytes=version.size_bytes,
                    created_at=version.created_at,
                    updated_at=version.updated_at or version.created_at,
                    **_lifecycle_row(version),
                )
            )
        except IntegrityError as e:
            raise DuplicateVersionError(version.ref) from e

    async def get(self, name: str, version: str) -> ModelVersion | None:
        """The version, or None."""
        result = await self._session.execute(
            select(model_versions).where(
                model_versions.c.name == name, model_versions.c.version == version
            )
        )
        row = result.mappings().first()
        return _model_version(row) if row is not None else None

    async def list(self, name: str | None = None) -> Sequence[ModelVersion]:
        """Every version (of `name` when given), by name, then oldest first."""
        query = select(model_versions).order_by(
            model_versions.c.name, model_versions.c.created_at, model_versions.c.version
        )
        if name is not None:
            query = query.where(model_versions.c.name == name)
        result = await self._session.execute(query)
        return [_model_version(row) for row in result.mappings()]

    async def update(self, version: ModelVersion, now: datetime) -> None:
        """Write the mutable fields: status, deprecation, replacement, archival, scope."""
        await self._session.execute(
            update(model_versions)
            .where(
                model_versions.c.name == version.name,
                model_versions.c.version == version.version,
            )
            .values(**_lifecycle_row(version), updated_at=now)
        )
        version.updated_at = now


class AdapterRepository:
    """Tenant adapters (every version of each name), read and written through one session;
    every read is scoped to one tenant (another tenant's adapters do not exist for it)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, adapter: Adapter) -> None:
        """Insert a new adapter version; DuplicateAdapterError when the tenant already has
        that version of the name (the transaction must then be rolled back)."""
        try:
            await self._session.execute(
                insert(tenant_adapters).values(
                    id=adapter.id,
                    tenant_id=adapter.tenant_id,
                    name=adapter.name,
                    version=adapter.version,
                    base_model=adapter.base_model,
                    rank=adapter.rank,
                    target_modules=list(adapter.target_modules),
                    digest=adapter.digest,
                    artifact_uri=adapter.artifact_uri,
                    files=[_file_json(f) for f in adapter.files],
                    size_bytes=adapter.size_bytes,
                    status=adapter.status.value,
                    report=adapter.report,
                    created_at=adapter.created_at,
                    updated_at=adapter.updated_at or adapter.created_at,
                    superseded_at=adapter.superseded_at,
                )
            )
        except IntegrityError as e:
            raise DuplicateAdapterError(f"{adapter.tenant_id}/{adapter.name}") from e

    async def get(self, tenant_id: str, name: str) -> Adapter | None:
        """The tenant's current version of `name` (`current_of`), or None."""
        return current_of(await self.versions(tenant_id, name))

    async def get_version(self, tenant_id: str, name: str, version: int) -> Adapter | None:
        """One version of the tenant's adapter `name`, or None."""
        result = await self._session.execute(
            select(tenant_adapters).where(
                tenant_adapters.c.tenant_id == tenant_id,
                tenant_adapters.c.name == name,
                tenant_adapters.c.version == version,
            )
        )
        row = result.mappings().first()
        return _adapter(row) if row is not None else None

    async def versions(self, tenant_id: str, name: str) -> Sequence[Adapter]:
        """Every version of the tenant's adapter `name`, oldest first."""
        result = await self._session.execute(
            select(tenant_adapters)
            .where(tenant_adapters.c.tenant_id == tenant_id, tenant_adapters.c.name == name)
            .order_by(tenant_adapters.c.version)
        )
        return [_adapter(row) for row in result.mappings()]

    async def list(self, tenant_id: str) -> Sequence[Adapter]:
        """The tenant's adapters by name, each name's current version (`current_of`)."""
        result = await self._session.execute(
            select(tenant_adapters)
            .where(tenant_adapters.c.tenant_id == tenant_id)
            .order_by(tenant_adapters.c.name, tenant_adapters.c.version)
        )
        by_name: dict[str, list[Adapter]] = {}
        for row in result.mappings():
            adapter = _adapter(row)
            by_name.setdefault(adapter.name, []).append(adapter)
        return [a for vs in by_name.values() if (a := current_of(vs)) is not None]

    async def finish(self, adapter: Adapter) -> bool:
        """Write a validating adapter's outcome (status, report); False when its row is no
        longer validating (deleted meanwhile): nothing is written then."""
        result = await self._session.execute(
            update(tenant_adapters)
            .where(
                tenant_adapters.c.id == adapter.id,
                tenant_adapters.c.status == AdapterStatus.VALIDATING.value,
            )
            .values(
                status=adapter.status.value,
                report=adapter.report,
                updated_at=adapter.updated_at or adapter.created_at,
            )
        )
        return bool(getattr(result, "rowcount", 0))

    async def update(self, adapter: Adapter) -> bool:
        """Write a version's status, report and supersession; False when it is gone."""
        result = await self._session.execute(
            update(tenant_adapters)
            .where(tenant_adapters.c.id == adapter.id)
            .values(
                status=adapter.status.value,
                report=adapter.report,
                superseded_at=adapter.superseded_at,
                updated_at=adapter.updated_at or adapter.created_at,
            )
        )
        return bool(getattr(result, "rowcount", 0))

    async def delete(self, adapter: Adapter) -> bool:
        """Remove one version's row; False when it was already gone."""
        result = await self._session.execute(
            delete(tenant_adapters).where(tenant_adapters.c.id == adapter.id)
        )
        return bool(getattr(result, "rowcount", 0))

    async def fail_stale(self, updated_before: datetime, report: str, now: datetime) -> int:
        """Mark adapters still `validating` since before `updated_before` as failed (their
        upload was cut off: a restart, a crash); returns how many."""
        result = await self._session.execute(
            update(tenant_adapters)
            .where(
                tenant_adapters.c.status == AdapterStatus.VALIDATING.value,
                tenant_adapters.c.updated_at < updated_before,
            )
            .values(status=AdapterStatus.FAILED.value, report=report, updated_at=now)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def current_of(versions: Sequence[Adapter]) -> Adapter | None:
    """The current version among one name's versions (oldest first): the oldest routable
    one (ready, not superseded: a newer ready one is still being rolled out over it), else
    the newest one whatever its status (what GET shows for a name that is not routable)."""
    routable = [a for a in versions if a.is_routable]
    if routable:
        return routable[0]
    return versions[-1] if versions else None


def _adapter(row: RowMapping) -> Adapter:
    return Adapter(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        base_model=row["base_model"],
        rank=row["rank"],
        target_modules=tuple(row["target_modules"]),
        digest=row["digest"],
        artifact_uri=row["artifact_uri"],
        files=tuple(ArtifactFile(**f) for f in row["files"]),
        status=AdapterStatus(row["status"]),
        report=row["report"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        superseded_at=row["superseded_at"],
    )


def _lifecycle_row(version: ModelVersion) -> dict[str, Any]:
    return {
        "status": version.status.value,
        "scope": version.scope,
        "deprecated_at": version.deprecated_at,
        "deprecation_end_date": version.deprecation_end_date,
        "replacement": version.replacement,
        "archived_at": version.archived_at,
    }


def _file_json(f: ArtifactFile) -> dict[str, Any]:
    return {"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256}


def _model_version(row: RowMapping) -> ModelVersion:
    return ModelVersion(
        name=row["name"],
        version=row["version"],
        digest=row["digest"],
        format=ModelFormat(row["format"]),
        quantization=Quantization(row["quantization"]),
        runtimes=tuple(row["runtimes"]),
        min_memory_bytes=row["min_memory_bytes"],
        device=Device(row["device"]),
        status=ModelStatus(row["status"]),
        scope=row["scope"],
        created_at=row["created_at"],
        artifact_uri=row["artifact_uri"],
        files=tuple(ArtifactFile(**f) for f in row["files"]),
        deprecated_at=row["deprecated_at"],
        deprecation_end_date=row["deprecation_end_date"],
        replacement=row["replacement"],
        archived_at=row["archived_at"],
        updated_at=row["updated_at"],
    )
