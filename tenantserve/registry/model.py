"""Model registry domain: immutable model versions, their lifecycle, and how a request's
model reference resolves to one.

Plain dataclasses; no SQLAlchemy, no web framework. Name, version and scope rules and
`ModelRef` live in `naming.py`, persistence in `tables.py` / `repository.py`, use cases in
`service.py`, artifact bytes in `artifacts.py`.

    active ──┐
             ├─► deprecated (end date ≥ 90 days out) ─► archived (final)
    canary ──┘                                    canary ─► archived

A version's content (its files and their digest) never changes after registration; only
its lifecycle (status, deprecation, replacement) and its scope (private → public) do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import TypeVar

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.naming import (
    PUBLIC_SCOPE,
    ModelRef,
    validate_name,
    validate_runtimes,
    validate_scope,
    validate_version,
    version_key,
)

MIN_DEPRECATION_DAYS = 90
DIGEST_PREFIX = "sha256:"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class VersionConflictError(InvalidRequestError):
    """name@version is already registered with other content or metadata (immutable)."""


class ModelArchivedError(InvalidRequestError):
    """The pinned version is archived; the message names its replacement."""


class ModelFormat(StrEnum):
    SAFETENSORS = "safetensors"
    GGUF = "gguf"


class Quantization(StrEnum):
    """How the weights are stored (the engine's `EngineConfig.quantization` for safetensors)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"
    Q8_0 = "q8_0"
    Q6_K = "q6_k"
    Q5_K_M = "q5_k_m"
    Q4_K_M = "q4_k_m"
    Q4_1 = "q4_1"
    Q4_0 = "q4_0"


class Device(StrEnum):
    """The hardware a version needs: a CPU is enough, a CUDA GPU, or either."""

    ANY = "any"
    CPU = "cpu"
    CUDA = "cuda"


class ModelStatus(StrEnum):
    ACTIVE = "active"
    CANARY = "canary"
    DEPRECATED = "deprecated"
    ARCHIVED = "archived"


E = TypeVar("E", bound=StrEnum)


def _parse_choice(enum: type[E], what: str, value: str | E) -> E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise InvalidRequestError(f"{what} must be one of {choices}, not {value!r}") from None


def parse_format(value: str | ModelFormat) -> ModelFormat:
    """The format named by `value`, or InvalidRequestError naming the choices."""
    return _parse_choice(ModelFormat, "format", value)


def parse_quantization(value: str | Quantization) -> Quantization:
    """The quantization named by `value`, or InvalidRequestError naming the choices."""
    return _parse_choice(Quantization, "quantization", value)


def parse_device(value: str | Device) -> Device:
    """The device named by `value`, or InvalidRequestError naming the choices."""
    return _parse_choice(Device, "device", value)


def parse_status(value: str | ModelStatus) -> ModelStatus:
    """The status named by `value`, or InvalidRequestError naming the choices."""
    return _parse_choice(ModelStatus, "status", value)


@dataclass(frozen=True)
class ArtifactFile:
    """One file of a version's artifacts: its path below the artifact root, size, sha256."""

    path: str
    size_bytes: int
    sha256: str

    def __post_init__(self) -> None:
        validate_artifact_path(self.path)
        if isinstance(self.size_bytes, bool) or self.size_bytes < 0:
            raise InvalidRequestError(f"{self.path}: size must be ≥ 0, not {self.size_bytes!r}")
        if not _SHA256_RE.fullmatch(self.sha256):
            raise InvalidRequestError(f"{self.path}: sha256 must be 64 lower-case hex digits")


def validate_artifact_path(path: str) -> str:
    """A relative POSIX path with no `..`, `.` or empty parts (it never leaves its root)."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidRequestError(f"artifact path {path!r} must be relative, without '..'")
    if "\\" in path or "\0" in path or PurePosixPath(path).is_absolute():
        raise InvalidRequestError(f"artifact path {path!r} has a forbidden character")
    return path


def manifest_digest(files: Iterable[ArtifactFile]) -> str:
    """`sha256:<hex>` of a version's content: over the files sorted by relative path, for
    each `path NUL size NUL sha256-of-content LF`. It covers every path and every byte, and
    can be checked against a manifest without the bytes."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.size_bytes}\0{f.sha256}\n".encode())
    return DIGEST_PREFIX + h.hexdigest()


def sorted_manifest(files: Iterable[ArtifactFile]) -> tuple[ArtifactFile, ...]:
    """Files sorted by path; InvalidRequestError for an empty list or a duplicate path."""
    out = tuple(sorted(files, key=lambda f: f.path))
    if not out:
        raise InvalidRequestError("a model version needs at least one artifact file")
    paths = [f.path for f in out]
    if len(set(paths)) != len(paths):
        twice = next(p for p in paths if paths.count(p) > 1)
        raise InvalidRequestError(f"artifact path {twice!r} appears twice")
    return out


def earliest_end_date(now: datetime) -> date:
    """The first allowed deprecation end date: `MIN_DEPRECATION_DAYS` after today (UTC)."""
    return (now.astimezone(UTC) + timedelta(days=MIN_DEPRECATION_DAYS)).date()


@dataclass
class ModelVersion:
    """One immutable `name@version`: its content (files, digest) and serving metadata, plus
    the lifecycle fields that change (status, deprecation, replacement, scope)."""

    name: str
    version: str
    digest: str
    format: ModelFormat
    quantization: Quantization
    runtimes: tuple[str, ...]
    min_memory_bytes: int
    device: Device
    status: ModelStatus
    scope: str
    created_at: datetime
    artifact_uri: str
    files: tuple[ArtifactFile, ...]
    deprecated_at: datetime | None = None
    deprecation_end_date: date | None = None
    # `name@version` to use instead (set on deprecation or archival).
    replacement: str | None = None
    archived_at: datetime | None = None
    updated_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        validate_name(self.name)
        validate_version(self.version)
        validate_scope(self.scope)
        self.runtimes = validate_runtimes(self.runtimes)
        self.files = sorted_manifest(self.files)
        if self.digest != manifest_digest(self.files):
            raise InvalidRequestError(f"{self.ref}: digest does not match its file manifest")
        if isinstance(self.min_memory_bytes, bool) or self.min_memory_bytes < 0:
            raise InvalidRequestError(f"min_memory_bytes must be ≥ 0, not {self.min_memory_bytes}")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def is_public(self) -> bool:
        return self.scope == PUBLIC_SCOPE

    def visible_to(self, tenant_id: str | None) -> bool:
        """Public versions are visible to everyone; a private one only to its tenant."""
        return self.is_public or self.scope == tenant_id

    def same_content(self, other: ModelVersion) -> str | None:
        """None when `other` registers exactly this content; else the first field that differs."""
        for what in ("digest", "format", "quantization", "scope"):
            if getattr(self, what) != getattr(other, what):
                return what
        return None

    def deprecate(
        self, end_date: date, now: datetime, replacement: ModelVersion | None = None
    ) -> None:
        """active / canary → deprecated until `end_date` (≥ 90 days from `now`); repeating
        the same deprecation is a no-op, anything else on a deprecated version is refused."""
        new_replacement = self._check_replacement(replacement)
        if self.status is ModelStatus.DEPRECATED:
            if end_date == self.deprecation_end_date and new_replacement == self.replacement:
                return
            raise InvalidRequestError(
                f"{self.ref} is already deprecated until {self.deprecation_end_date}"
            )
        if self.status is ModelStatus.ARCHIVED:
            raise InvalidRequestError(f"{self.ref} is archived; archived versions are final")
        earliest = earliest_end_date(now)
        if end_date < earliest:
            raise InvalidRequestError(
                f"the deprecation end date must be at least {MIN_DEPRECATION_DAYS} days out: "
                f"{earliest.isoformat()} or later, not {end_date.isoformat()}"
            )
        self.status = ModelStatus.DEPRECATED
        self.deprecated_at = now
        self.deprecation_end_date = end_date
        self.replacement = new_replacement

    def archive(self, now: datetime, replacement: ModelVersion | None = None) -> None:
        """deprecated / canary → archived (final; pinned requests get an error naming the
        replacement). An active version is deprecated first; archiving twice is a no-op."""
        new_replacement = self._check_replacement(replacement)
        if self.status is ModelStatus.ARCHIVED:
            if new_replacement in (None, self.replacement):
                return
            raise InvalidRequestError(f"{self.ref} is archived; archived versions are final")
        if self.status is ModelStatus.ACTIVE:
            raise InvalidRequestError(
                f"{self.ref} is active: deprecate it first (end date at least "
                f"{MIN_DEPRECATION_DAYS} days out), then archive it"
            )
        self.status = ModelStatus.ARCHIVED
        self.archived_at = now
        if new_replacement is not None:
            self.replacement = new_replacement

    def change_scope(self, scope: str) -> None:
        """Private → public, or private to the same tenant; a public version stays public."""
        scope = validate_scope(scope)
        if self.is_public and scope != PUBLIC_SCOPE:
            raise InvalidRequestError(f"{self.ref} is public; a public version cannot be private")
        if not self.is_public and scope not in (PUBLIC_SCOPE, self.scope):
            raise InvalidRequestError(f"{self.ref} is private to another tenant")
        self.scope = scope

    def _check_replacement(self, replacement: ModelVersion | None) -> str | None:
        if replacement is None:
            return None
        if replacement.ref == self.ref:
            raise InvalidRequestError(f"{self.ref} cannot replace itself")
        if replacement.status is ModelStatus.ARCHIVED:
            raise InvalidRequestError(f"replacement {replacement.ref} is archived")
        if not replacement.is_public and replacement.scope != self.scope:
            raise InvalidRequestError(
                f"replacement {replacement.ref} is not visible to every user of {self.ref}"
            )
        return replacement.ref


@dataclass(frozen=True)
class Resolution:
    """The version a request gets, and the deprecation warning it carries (None: none)."""

    version: ModelVersion
    warning: str | None = None

    def headers(self) -> dict[str, str]:
        """Response headers for a deprecated version: `Deprecation` (RFC 9745, when it was
        deprecated), `Sunset` (RFC 8594, its end date) and a `Warning`; else none."""
        v = self.version
        if self.warning is None or v.deprecated_at is None or v.deprecation_end_date is None:
            return {}
        sunset = datetime.combine(v.deprecation_end_date, datetime.min.time(), tzinfo=UTC)
        return {
            "Deprecation": f"@{int(v.deprecated_at.timestamp())}",
            "Sunset": format_datetime(sunset, usegmt=True),
            "Warning": f'299 tenantserve "{self.warning}"',
        }


def deprecation_warning(version: ModelVersion) -> str:
    """`model x@1 is deprecated and will be archived on <date>; use y@2`."""
    text = (
        f"model {version.ref} is deprecated and will be archived on {version.deprecation_end_date}"
    )
    return f"{text}; use {version.replacement}" if version.replacement else text


def resolve(ref: ModelRef, versions: Sequence[ModelVersion], tenant_id: str | None) -> Resolution:
    """The version `ref` names among `versions` (all of one model), as `tenant_id` sees it.

    `name@version`: that version, deprecated ones with a warning; archived raises
    ModelArchivedError naming the replacement. `name`: the newest active version, else the
    newest deprecated one (with a warning). Versions private to another tenant do not exist
    for this one (NotFoundError, never "forbidden"); canaries are served only when pinned.
    """
    visible = [v for v in versions if v.name == ref.name and v.visible_to(tenant_id)]
    if ref.version is not None:
        for v in visible:
            if v.version == ref.version:
                return _serve(v)
        raise NotFoundError(f"model {ref} does not exist")
    for status in (ModelStatus.ACTIVE, ModelStatus.DEPRECATED):
        candidates = [v for v in visible if v.status is status]
        if candidates:
            return _serve(max(candidates, key=lambda v: version_key(v.version)))
    if visible:
        newest = max(visible, key=lambda v: version_key(v.version))
        if newest.status is ModelStatus.ARCHIVED:
            return _serve(newest)  # raises, naming the replacement
    raise NotFoundError(f"model {ref} has no servable version")


def _serve(version: ModelVersion) -> Resolution:
    if version.status is ModelStatus.ARCHIVED:
        instead = f"; use {version.replacement} instead" if version.replacement else ""
        raise ModelArchivedError(f"model {version.ref} is archived{instead}")
    if version.status is ModelStatus.DEPRECATED:
        return Resolution(version, deprecation_warning(version))
    return Resolution(version)
