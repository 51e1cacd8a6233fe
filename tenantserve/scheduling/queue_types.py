"""The fair queue's vocabulary: what a request brings (`Ticket`), the engine slot it holds
(`Grant`, and `SlotUsage` inside `FairQueue.slot()`), why it is turned away (`Overloaded`:
`QueueFull` -> 429, `Shed` -> 503, both with a Retry-After) and the snapshot metrics read
(`FairQueueStats`). Plain data and exceptions: the policy is in `fair_queue.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tenantserve.errors import TenantServeError
from tenantserve.tiers import Tier


class Overloaded(TenantServeError):
    """The pool cannot take the request now; retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(Overloaded):
    """The request's tier queue is full (maps to 429 with Retry-After)."""

    def __init__(self, tier: Tier, retry_after_s: float) -> None:
        super().__init__(f"the {tier} queue is full", retry_after_s)
        self.tier = tier


class Shed(Overloaded):
    """Shed under overload, lowest tier first (maps to 503 with Retry-After)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("shed under overload", retry_after_s)


@dataclass(frozen=True)
class Ticket:
    """One request asking for an engine slot; `arrival_time` is on the queue's clock."""

    request_id: str
    tenant_id: str
    tier: Tier
    est_input_tokens: int
    est_output_tokens: int
    arrival_time: float


@dataclass(frozen=True)
class Grant:
    """An engine slot held by one request until `FairQueue.release(grant, ...)`."""

    grant_id: int
    ticket: Ticket
    # The tier it was scheduled in: its own, or one lower while demoted. This is the
    # priority to hand the engine so that preemption follows it.
    tier: Tier
    granted_at: float

    @property
    def queue_time_s(self) -> float:
        return self.granted_at - self.ticket.arrival_time


@dataclass
class SlotUsage:
    """What the request inside `FairQueue.slot()` consumed; update it as the engine reports."""

    grant: Grant
    input_tokens: int
    output_tokens: int = 0


@dataclass(frozen=True)
class FairQueueStats:
    """A snapshot for metrics: load, per-tenant counters, rejections and demotions."""

    in_flight: int
    waiting: Mapping[Tier, int]
    # Per-tenant W, by the tier whose counter holds it.
    counters: Mapping[Tier, Mapping[str, float]]
    # QueueFull per tier.
    rejected: Mapping[Tier, int]
    # Shed per tier: evicted waiters plus requests turned away under global overload.
    shed: Mapping[Tier, int]
    # Demoted tenants and when their demotion ends.
    demoted_until: Mapping[str, float]
