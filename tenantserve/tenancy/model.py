"""Tenancy domain: tenants, their API keys, and the `TenantContext` a request carries.

Plain dataclasses; no SQLAlchemy, no web framework. Persistence lives in
`tables.py` / `repository.py`, use cases in `service.py`. A tenant's quotas are
`tenantserve.admission.quotas.Quota` values (pure domain too; admission owns their meaning).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from enum import StrEnum

from tenantserve.admission.quotas import Quota
from tenantserve.errors import InvalidRequestError
from tenantserve.tiers import Tier

TENANT_ID_PREFIX = "ten_"
KEY_ID_PREFIX = "key_"
MAX_TENANT_NAME_CHARS = 200


class Region(StrEnum):
    """Where a tenant's data is stored and its requests are served."""

    US = "us"
    EU = "eu"


class TenantStatus(StrEnum):
    """A suspended tenant keeps its data, but none of its credentials authenticate."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


def random_id_part(num_bytes: int = 10) -> str:
    """Lower-case base32 of random bytes, no padding: 16 chars of [a-z2-7] for 10 bytes."""
    return base64.b32encode(secrets.token_bytes(num_bytes)).decode("ascii").rstrip("=").lower()


def new_tenant_id() -> str:
    """A fresh tenant id, `ten_<base32>`."""
    return TENANT_ID_PREFIX + random_id_part()


def parse_tier(value: str | Tier) -> Tier:
    """The tier named by `value`, or InvalidRequestError naming the choices."""
    try:
        return Tier(value)
    except ValueError:
        choices = ", ".join(t.value for t in Tier)
        raise InvalidRequestError(f"tier must be one of {choices}, not {value!r}") from None


def parse_region(value: str | Region) -> Region:
    """The region named by `value`, or InvalidRequestError naming the choices."""
    try:
        return Region(value)
    except ValueError:
        choices = ", ".join(r.value for r in Region)
        raise InvalidRequestError(f"region must be one of {choices}, not {value!r}") from None


def parse_status(value: str | TenantStatus) -> TenantStatus:
    """The status named by `value`, or InvalidRequestError naming the choices."""
    try:
        return TenantStatus(value)
    except ValueError:
        choices = ", ".join(s.value for s in TenantStatus)
        raise InvalidRequestError(f"status must be one of {choices}, not {value!r}") from None


@dataclass(frozen=True)
class TenantLimits:
    """Per-tenant overrides of the tier defaults; None means "the tier's default"."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidRequestError(
                    f"limit {f.name} must be a positive integer or null, not {value!r}"
                )

    def to_dict(self) -> dict[str, int]:
        """Only the overridden limits, as JSON-ready data."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TenantLimits:
        """Parse overrides; unknown names are refused with InvalidRequestError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidRequestError(
                f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)  # type: ignore[arg-type]

    def merged(self, changes: Mapping[str, object]) -> TenantLimits:
        """These limits with `changes` applied (a None value resets that limit to the tier's)."""
        return TenantLimits.from_dict({**self.to_dict(), **changes})


@dataclass
class Tenant:
    """A customer of the platform; `id` is permanent, everything else can be updated."""

    id: str
    name: str
    tier: Tier
    region: Region
    status: TenantStatus
    created_at: datetime
    limits: TenantLimits = field(default_factory=TenantLimits)
    # At most one per (metric, period); see `tenantserve.admission.quotas`.
    quotas: tuple[Quota, ...] = ()
    # Opt-in: its request records keep prompt and completion text (never otherwise).
    log_content: bool = False
    # The dedicated pool it was moved to (`tenantserve tenant move`); None: shared pools.
    pool: str | None = None

    @property
    def is_active(self) -> bool:
        return self.status is TenantStatus.ACTIVE


def validate_tenant_name(name: str) -> str:
    """The stripped name, or InvalidRequestError when empty or too long."""
    name = name.strip()
    if not name:
        raise InvalidRequestError("tenant name must not be empty")
    if len(name) > MAX_TENANT_NAME_CHARS:
        raise InvalidRequestError(f"tenant name is longer than {MAX_TENANT_NAME_CHARS} characters")
    return name


def normalize_allowed_models(models: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated model names; an empty result means "every model"."""
    out = set()
    for m in models:
        if not isinstance(m, str) or not m.strip():
            raise InvalidRequestError(f"allowed model names must be non-empty strings, not {m!r}")
        out.add(m.strip())
    return tuple(sorted(out))


@dataclass
class ApiKey:
    """A tenant's API key as stored: the secret exists only as `secret_hash`."""

    id: str
    tenant_id: str
    # The public leading part of the plaintext key (`ts-<id part>`); safe to display.
    prefix: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    # Empty: every model the tenant may use.
    allowed_models: tuple[str, ...] = ()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: datetime) -> bool:
        """True once `now` reaches `expires_at`; a key without expiry never expires."""
        return self.expires_at is not None and now >= self.expires_at

    def revoke(self, now: datetime) -> None:
        """Revoke the key; revoking twice keeps the first time."""
        if self.revoked_at is None:
            self.revoked_at = now


@dataclass(frozen=True)
class TenantContext:
    """Who a request is for: built by authentication, passed down unchanged, never from
    client input."""

    tenant_id: str
    tier: Tier
    region: Region
    # Exactly one of key_id (API key) and subject (JWT `sub`) is set.
    key_id: str | None = None
    subject: str | None = None
    # Empty: every model the tenant may use.
    allowed_models: frozenset[str] = frozenset()
    limits: TenantLimits = field(default_factory=TenantLimits)
    # The tenant's quotas, checked against its usage before each request.
    quotas: tuple[Quota, ...] = ()
    # The tenant opted in to prompt and completion text in its request records.
    log_content: bool = False
    # The dedicated pool the tenant was moved to; None: the shared pools.
    pool: str | None = None

    def allows_model(self, model: str) -> bool:
        """Whether the credential's scope includes `model` (an empty scope allows all)."""
        return not self.allowed_models or model in self.allowed_models
