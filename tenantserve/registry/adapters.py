"""Tenant LoRA adapters, the domain: an uploaded adapter, its name rules and its lifecycle.

Plain dataclasses; no SQLAlchemy, no web framework. Persistence lives in `tables.py` /
`repository.py`, the upload use case in `adapter_service.py`.

    validating ─┬─► ready    (validated, stored, smoke-tested: routable)
                └─► failed   (the tenant-facing `report` says why; never routable)

An adapter belongs to one tenant; its name is unique within that tenant and invisible to
every other one. Its content (files, digest) never changes after upload: a new content is
a new upload (delete the old one first, or use another name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from tenantserve.errors import InvalidRequestError
from tenantserve.registry.model import ArtifactFile, manifest_digest, sorted_manifest
from tenantserve.tenancy.model import random_id_part

ADAPTER_ID_PREFIX = "adp_"
MAX_ADAPTER_NAME_CHARS = 64
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}")


class AdapterStatus(StrEnum):
    VALIDATING = "validating"
    READY = "ready"
    FAILED = "failed"


class AdapterExistsError(InvalidRequestError):
    """The tenant already has an adapter with this name (409)."""


class AdapterTooLargeError(InvalidRequestError):
    """The upload (or an archive member) is above the configured size limit (413)."""


def validate_adapter_name(name: object) -> str:
    """`name` when it matches `[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}`; InvalidRequestError else."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidRequestError(
            "adapter name must match [a-zA-Z0-9][a-zA-Z0-9._-]* (at most "
            f"{MAX_ADAPTER_NAME_CHARS} characters), not {name!r}"
        )
    return name


def new_adapter_id() -> str:
    """`adp_` + 16 random base32 characters: unique per upload, also the engine's LoRA id."""
    return ADAPTER_ID_PREFIX + random_id_part()


def adapter_key(tenant_id: str, name: str, digest: str) -> str:
    """`adapters/<tenant>/<name>/<first 16 hex digits of the digest>` in the artifact store."""
    return f"adapters/{tenant_id}/{name}/{digest.removeprefix('sha256:')[:16]}"


@dataclass
class Adapter:
    """One uploaded adapter of one tenant: what it adapts, its content and its status."""

    id: str
    tenant_id: str
    name: str
    # The base model version it was validated against (`name@version`).
    base_model: str
    rank: int
    target_modules: tuple[str, ...]
    digest: str
    artifact_uri: str
    files: tuple[ArtifactFile, ...]
    status: AdapterStatus
    created_at: datetime
    # Tenant-facing: why it failed (None while validating and when ready).
    report: str | None = None
    updated_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        validate_adapter_name(self.name)
        if not self.id.startswith(ADAPTER_ID_PREFIX):
            raise InvalidRequestError(f"adapter id must start with {ADAPTER_ID_PREFIX}")
        if isinstance(self.rank, bool) or self.rank < 1:
            raise InvalidRequestError(f"adapter rank must be ≥ 1, not {self.rank!r}")
        self.target_modules = tuple(sorted(set(self.target_modules)))
        if not self.target_modules:
            raise InvalidRequestError("an adapter targets at least one module")
        self.files = sorted_manifest(self.files)
        if self.digest != manifest_digest(self.files):
            raise InvalidRequestError(f"adapter {self.name}: digest does not match its files")
        self.status = AdapterStatus(self.status)

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def is_ready(self) -> bool:
        """Only a ready adapter may be routed to."""
        return self.status is AdapterStatus.READY

    def mark_ready(self, now: datetime) -> None:
        """validating → ready."""
        self._leave_validating(AdapterStatus.READY, None, now)

    def mark_failed(self, report: str, now: datetime) -> None:
        """validating → failed, with the tenant-facing reason."""
        if not report:
            raise ValueError("a failed adapter needs a report")
        self._leave_validating(AdapterStatus.FAILED, report, now)

    def _leave_validating(self, status: AdapterStatus, report: str | None, now: datetime) -> None:
        if self.status is not AdapterStatus.VALIDATING:
            raise InvalidRequestError(f"adapter {self.name} is {self.status}, not validating")
        self.status = status
        self.report = report
        self.updated_at = now
