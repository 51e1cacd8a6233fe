"""Per-tenant rate limits and the limiter's failure policy, as data.

`RateLimits.for_tier(tier)` gives a tier's defaults; a tenant's overrides are a
`dataclasses.replace` of them. Nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tenantserve.errors import ConfigError
from tenantserve.tiers import Tier


@dataclass(frozen=True)
class RateLimits:
    """A tenant's per-minute request and token budgets and its in-flight request cap."""

    requests_per_minute: int
    # Prompt tokens + max_tokens, reserved at admission; the unused part is refunded.
    tokens_per_minute: int
    max_concurrent: int

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute", "max_concurrent"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"RateLimits.{name} must be positive, not {getattr(self, name)}")

    @classmethod
    def for_tier(cls, tier: Tier) -> RateLimits:
        """The tier's default limits."""
        return TIER_DEFAULT_LIMITS[tier]


TIER_DEFAULT_LIMITS: Mapping[Tier, RateLimits] = MappingProxyType(
    {
        Tier.FREE: RateLimits(requests_per_minute=20, tokens_per_minute=20_000, max_concurrent=2),
        Tier.STANDARD: RateLimits(
            requests_per_minute=300, tokens_per_minute=200_000, max_concurrent=16
        ),
        Tier.PREMIUM: RateLimits(
            requests_per_minute=3_000, tokens_per_minute=2_000_000, max_concurrent=64
        ),
    }
)


@dataclass(frozen=True)
class LimiterPolicy:
    """What the limiter does when its store is unreachable, and how long a lost slot lives."""

    # True: admit unmetered (a `degraded` reservation); False: reject with
    # "limiter_unavailable". Free and standard fail closed, premium fails open.
    fail_open: Mapping[Tier, bool] = field(
        default_factory=lambda: MappingProxyType(
            {Tier.FREE: False, Tier.STANDARD: False, Tier.PREMIUM: True}
        )
    )
    # Retry-After for a fail-closed rejection; also how long the limiter stops
    # calling an unreachable store before it probes it again.
    unavailable_retry_after_s: float = 1.0
    # Retry-After for a concurrency rejection (no rate to derive it from).
    concurrency_retry_after_s: float = 1.0
    # An in-flight slot whose holder never commits (a crashed gateway) is freed
    # after this long; must exceed the longest request.
    slot_ttl_s: float = 600.0
    # Socket connect/read timeout for one limiter round trip to the store; also the
    # longest a decision waits for a free connection before the policy decides.
    store_timeout_s: float = 0.5
    # Connections to the store per limiter (per gateway process).
    max_connections: int = 64

    def __post_init__(self) -> None:
        if self.slot_ttl_s <= 0 or self.store_timeout_s <= 0 or self.max_connections <= 0:
            raise ConfigError(
                "LimiterPolicy.slot_ttl_s, store_timeout_s and max_connections must be positive"
            )

    def fails_open(self, tier: Tier) -> bool:
        """Whether a request of this tier is admitted while the store is unreachable."""
        return self.fail_open.get(tier, False)
