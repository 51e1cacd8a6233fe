"""The rate limiter interface and its results.

One decision per request, before any model work: a request costs 1 against
requests/minute, prompt + max_tokens against tokens/minute, and one in-flight slot;
all three are taken together or none is (`reserve`). At completion or cancellation
`commit` frees the slot and refunds the tokens the request did not use.

Both backends run GCRA per tenant and metric: a theoretical arrival time (TAT)
advances by `cost * 60 / limit` seconds per decision and a decision passes while
the TAT stays within 60 s of now, so the burst is the per-minute limit and the
sustained rate is the limit per minute. A refund moves the TAT back, never below now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from tenantserve.admission.limits import RateLimits
from tenantserve.tiers import Tier

RejectReason = Literal[
    "requests_per_minute", "tokens_per_minute", "concurrency", "limiter_unavailable"
]

# GCRA tolerance: how far ahead of now a TAT may run, i.e. the burst window.
WINDOW_S = 60.0
# Float slack in the GCRA comparison, so a burst of exactly the limit passes.
EPSILON_S = 1e-9


@dataclass(frozen=True)
class Reservation:
    """What one admitted request holds until it is committed."""

    tenant_id: str
    tier: Tier
    limits: RateLimits
    request_id: str
    reserved_tokens: int
    # Admitted without metering because the store was unreachable (fail open);
    # committing it is a no-op.
    degraded: bool = False


@dataclass(frozen=True)
class Admit:
    """The request may run; commit its reservation when it ends."""

    reservation: Reservation


@dataclass(frozen=True)
class Reject:
    """The request must not run; the client may retry after `retry_after_s`."""

    reason: RejectReason
    retry_after_s: float


class RateLimiter(Protocol):
    """Per-tenant RPM, TPM and concurrency limits with reserve-then-commit."""

    async def reserve(
        self, tenant_id: str, tier: Tier, limits: RateLimits, tokens: int, request_id: str
    ) -> Admit | Reject:
        """Take 1 request, `tokens` tokens and one slot atomically, or nothing and a Reject.

        Reserving a request_id that is already in flight returns its reservation again
        and takes nothing more.
        """
        ...

    async def commit(self, reservation: Reservation, actual_tokens: int) -> None:
        """Free the slot and refund `reserved - actual` tokens; a second commit is a no-op."""
        ...

    async def close(self) -> None:
        """Release the limiter's connections; it must not be used afterwards."""
        ...


def check_cost(limits: RateLimits, tokens: int) -> Reject | None:
    """A Reject for a request no budget can ever admit, else None.

    A reservation larger than the whole per-minute token budget never fits; admission's
    per-tier `max_tokens` caps should keep requests below it.
    """
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, not {tokens}")
    if tokens > limits.tokens_per_minute:
        return Reject("tokens_per_minute", WINDOW_S)
    return None
