"""Tenant LoRA adapters, the domain: an uploaded adapter, its name rules and its lifecycle.

Plain dataclasses; no SQLAlchemy, no web framework. Persistence lives in `tables.py` /
`repository.py`, the upload use case in `adapter_service.py`.

    validating ─┬─► ready    (validated, stored, smoke-tested: routable)
                └─► failed   (the tenant-facing `report` says why; never routable)

An adapter belongs to one tenant; its name is unique within that tenant and invisible to
every other one. Its content (files, digest) never changes after upload: a new content is
a new upload of the name, its next version (1, 2, ...). A name's current version is its
oldest ready version not yet superseded: a new version is rolled out over it like a model
version (the rollout key `adapter:<tenant>/<name>`, refs `adapter:<tenant>/<name>@<n>`), and
when that rollout finishes the old version is superseded (rolled back: the new one is).
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
ADAPTER_ROLLOUT_PREFIX = "adapter:"
MAX_ADAPTER_NAME_CHARS = 64
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}")


class AdapterStatus(StrEnum):
    VALIDATING = "validating"
    READY = "ready"
    FAILED = "failed"


class AdapterExistsError(InvalidRequestError):
    """The upload cannot make a new version of the name now (409): another upload of the
    same version won, the newest one is still validating, or one is being rolled out."""


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


def adapter_key(tenant_id: str, name: str, digest: str, version: int = 1) -> str:
    """`adapters/<tenant>/<name>/<first 16 hex digits of the digest>` in the artifact store
    (`...-v<n>` from version 2 on, so versions with the same content never share files)."""
    key = f"adapters/{tenant_id}/{name}/{digest.removeprefix('sha256:')[:16]}"
    return key if version == 1 else f"{key}-v{version}"


def adapter_rollout_key(tenant_id: str, name: str) -> str:
    """`adapter:<tenant>/<name>`: what the rollout service keys an adapter's rollouts by."""
    return f"{ADAPTER_ROLLOUT_PREFIX}{tenant_id}/{name}"


def adapter_ref(tenant_id: str, name: str, version: int) -> str:
    """`adapter:<tenant>/<name>@<version>`: one version of an adapter, as rollouts name it."""
    return f"{adapter_rollout_key(tenant_id, name)}@{version}"


def is_adapter_key(model: str) -> bool:
    """Whether a rollout key (or ref) names a tenant's adapter rather than a model."""
    return model.startswith(ADAPTER_ROLLOUT_PREFIX)


def parse_adapter_key(key: str) -> tuple[str, str]:
    """(tenant_id, name) of `adapter:<tenant>/<name>`; InvalidRequestError otherwise."""
    tenant_id, slash, name = key.removeprefix(ADAPTER_ROLLOUT_PREFIX).partition("/")
    if not is_adapter_key(key) or not slash or not tenant_id or "@" in name:
        raise InvalidRequestError(f"not an adapter rollout key: {key!r}")
    return tenant_id, validate_adapter_name(name)


def parse_adapter_ref(ref: str) -> tuple[str, str, int]:
    """(tenant_id, name, version) of `adapter:<tenant>/<name>@<version>`."""
    key, at, version = ref.partition("@")
    if not at or not version.isdigit():
        raise InvalidRequestError(f"not an adapter version ref: {ref!r}")
    tenant_id, name = parse_adapter_key(key)
    return tenant_id, name, int(version)


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
    # Tenant-facing: why it failed; when ready, its tenant eval's score (else None).
    report: str | None = None
    updated_at: datetime | None = field(default=None, compare=False)
    # 1 for a name's first upload, n+1 for an upload over version n.
    version: int = 1
    # When a newer version replaced it (its rollout finished) or its own rollout was
    # rolled back; a superseded version is never routed to.
    superseded_at: datetime | None = None

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
        if isinstance(self.version, bool) or self.version < 1:
            raise InvalidRequestError(f"adapter version must be ≥ 1, not {self.version!r}")

    @property
    def ref(self) -> str:
        """`adapter:<tenant>/<name>@<version>` (what a rollout of the adapter routes to)."""
        return adapter_ref(self.tenant_id, self.name, self.version)

    @property
    def rollout_key(self) -> str:
        return adapter_rollout_key(self.tenant_id, self.name)

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def is_ready(self) -> bool:
        """Only a ready adapter may be routed to."""
        return self.status is AdapterStatus.READY

    @property
    def is_routable(self) -> bool:
        """Ready and not superseded by a newer version (or by its own rollback)."""
        return self.is_ready and self.superseded_at is None

    def supersede(self, now: datetime) -> None:
        """A newer version replaced it: it is kept (listed) but never routed to again."""
        if self.superseded_at is None:
            self.superseded_at = now
            self.updated_at = now

    def roll_back(self, reason: str, now: datetime) -> None:
        """Its rollout was rolled back: failed, superseded, with the reason as its report."""
        self.status = AdapterStatus.FAILED
        self.report = reason
        self.supersede(now)
        self.updated_at = now

    def mark_ready(self, now: datetime, report: str | None = None) -> None:
        """validating → ready (with the validation report, e.g. the tenant eval's score)."""
        self._leave_validating(AdapterStatus.READY, report, now)

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
