"""The JSON shape of a model version, shared by the admin API and the CLI (same JSON)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from tenantserve.registry.model import ModelVersion


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def version_json(v: ModelVersion) -> dict[str, Any]:
    """`{"id": "name@version", "name", "version", "digest", "format", "quantization",
    "runtimes", "min_memory_bytes", "device", "status", "scope", "size_bytes",
    "artifact_uri", "files": [{"path", "size_bytes", "sha256"}], "created_at",
    "deprecated_at", "deprecation_end_date", "replacement", "archived_at"}`."""
    return {
        "id": v.ref,
        "object": "model_version",
        "name": v.name,
        "version": v.version,
        "digest": v.digest,
        "format": v.format.value,
        "quantization": v.quantization.value,
        "runtimes": list(v.runtimes),
        "min_memory_bytes": v.min_memory_bytes,
        "device": v.device.value,
        "status": v.status.value,
        "scope": v.scope,
        "size_bytes": v.size_bytes,
        "artifact_uri": v.artifact_uri,
        "files": [
            {"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256} for f in v.files
        ],
        "created_at": _iso(v.created_at),
        "deprecated_at": _iso(v.deprecated_at),
        "deprecation_end_date": _iso(v.deprecation_end_date),
        "replacement": v.replacement,
        "archived_at": _iso(v.archived_at),
    }
