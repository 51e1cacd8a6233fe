"""Service tiers: the one place their order is defined."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    """A tenant's SLA tier; `priority` orders scheduling and eviction (higher wins)."""

    FREE = "free"
    STANDARD = "standard"
    PREMIUM = "premium"

    @property
    def priority(self) -> int:
        return _PRIORITY[self]


_PRIORITY = {Tier.FREE: 0, Tier.STANDARD: 1, Tier.PREMIUM: 2}
