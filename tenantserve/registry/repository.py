"""`ModelRepository`: model versions in and out of the database, as domain objects.

Works inside the caller's transaction (the unit of work's session); it never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.registry.model import (
    ArtifactFile,
    Device,
    ModelFormat,
    ModelStatus,
    ModelVersion,
    Quantization,
)
from tenantserve.registry.tables import model_versions


class DuplicateVersionError(Exception):
    """Another transaction inserted the same name@version first."""


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
