"""In-process rate limiter: the embedded default, exact within one process.

Limits hold per process, so N gateway processes admit up to N times the limits;
use the Redis backend for more than one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tenantserve.admission.limiter import (
    EPSILON_S,
    WINDOW_S,
    Admit,
    Reject,
    RejectReason,
    Reservation,
    check_cost,
)
from tenantserve.admission.limits import LimiterPolicy, RateLimits
from tenantserve.tiers import Tier

# Drop idle tenants' state every this many decisions.
_SWEEP_EVERY = 4096


@dataclass
class _TenantState:
    # GCRA theoretical arrival times, in clock seconds.
    rpm_tat_s: float = 0.0
    tpm_tat_s: float = 0.0
    # request_id -> when its slot expires if never committed (clock seconds).
    inflight: dict[str, float] = field(default_factory=dict)


def gcra_step(tat_s: float, now_s: float, cost: float, limit_per_min: int) -> tuple[float, float]:
    """(new TAT, seconds to wait); the decision passes when the wait is <= 0."""
    new_tat_s = max(tat_s, now_s) + cost * WINDOW_S / limit_per_min
    return new_tat_s, new_tat_s - WINDOW_S - now_s


def refund_tat(tat_s: float, now_s: float, refund: float, limit_per_min: int) -> float:
    """The TAT after giving back `refund` units (negative: charging more), never below now."""
    return max(max(tat_s, now_s) - refund * WINDOW_S / limit_per_min, now_s)


class LocalRateLimiter:
    """GCRA and concurrency counters in a dict; one event loop, no locking needed."""

    def __init__(
        self, policy: LimiterPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._policy = policy or LimiterPolicy()
        self._clock = clock
        self._tenants: dict[str, _TenantState] = {}
        self._decisions = 0

    async def reserve(
        self, tenant_id: str, tier: Tier, limits: RateLimits, tokens: int, request_id: str
    ) -> Admit | Reject:
        """Take 1 request, `tokens` tokens and one slot atomically, or nothing and a Reject."""
        if (rejected := check_cost(limits, tokens)) is not None:
            return rejected
        now_s = self._clock()
        self._decisions += 1
        if self._decisions % _SWEEP_EVERY == 0:
            self._sweep(now_s)
        state = self._tenants.setdefault(tenant_id, _TenantState())
        if any(expires_s <= now_s for expires_s in state.inflight.values()):
            state.inflight = {r: e for r, e in state.inflight.items() if e > now_s}
        if request_id in state.inflight:
            # Already in flight (a retried reserve): the first call took everything.
            return Admit(Reservation(tenant_id, tier, limits, request_id, tokens))

        rpm_tat_s, rpm_wait_s = gcra_step(state.rpm_tat_s, now_s, 1, limits.requests_per_minute)
        tpm_tat_s, tpm_wait_s = gcra_step(state.tpm_tat_s, now_s, tokens, limits.tokens_per_minute)
        failed: list[tuple[RejectReason, float]] = []
        if rpm_wait_s > EPSILON_S:
            failed.append(("requests_per_minute", rpm_wait_s))
        if tpm_wait_s > EPSILON_S:
            failed.append(("tokens_per_minute", tpm_wait_s))
        if len(state.inflight) >= limits.max_concurrent:
            failed.append(("concurrency", self._policy.concurrency_retry_after_s))
        if failed:
            # The first reason names the limit; the wait is the longest, since all must pass.
            return Reject(failed[0][0], max(wait_s for _, wait_s in failed))

        state.rpm_tat_s, state.tpm_tat_s = rpm_tat_s, tpm_tat_s
        state.inflight[request_id] = now_s + self._policy.slot_ttl_s
        return Admit(Reservation(tenant_id, tier, limits, request_id, tokens))

    async def commit(self, reservation: Reservation, actual_tokens: int) -> None:
        """Free the slot and refund `reserved - actual` tokens; a second commit is a no-op.

        Using more than reserved charges the difference. A commit after the slot
        expired (`slot_ttl_s`) and was swept finds nothing to free and refunds nothing.
        """
        state = self._tenants.get(reservation.tenant_id)
        if reservation.degraded or state is None:
            return
        if state.inflight.pop(reservation.request_id, None) is None:
            return
        state.tpm_tat_s = refund_tat(
            state.tpm_tat_s,
            self._clock(),
            reservation.reserved_tokens - actual_tokens,
            reservation.limits.tokens_per_minute,
        )

    async def close(self) -> None:
        """Forget all state."""
        self._tenants.clear()

    def _sweep(self, now_s: float) -> None:
        idle = [
            tenant_id
            for tenant_id, s in self._tenants.items()
            if s.rpm_tat_s <= now_s
            and s.tpm_tat_s <= now_s
            and all(expires_s <= now_s for expires_s in s.inflight.values())
        ]
        for tenant_id in idle:
            del self._tenants[tenant_id]
