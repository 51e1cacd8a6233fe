"""FairQueue: which request a pool submits to its engine next, once the pool is at capacity.

At most `max_in_flight` requests hold a slot (are in the engine) at once. Whenever a slot
frees, it goes to a waiter chosen in three steps:

1. tier: the highest effective priority among tiers with waiters. A tier's effective
   priority is its own plus one per `aging_s` that its oldest waiter has waited, so no
   tier starves forever; ties go to the higher tier.
2. tenant: inside that tier, the backlogged tenant with the least virtual token counter
   (`VirtualTokenCounter`, one per tier); ties go to the tenant whose head waited longest.
3. request: FIFO within the tenant.

VTC charging: the estimated input at grant, the true input and output at release.

Overload: a request that would wait in a full tier queue is rejected (`QueueFull`); when
all waiters together reach `max_waiting`, a new request evicts the newest waiter of the
lowest tier below its own (that waiter's `acquire` raises `Shed`), or is shed itself
(both `Overloaded`, in `queue_types.py` with `Ticket`, `Grant` and `FairQueueStats`).
`retry_after_s` is the weighted work queued at or above the tier over the recent service
rate.

A tenant flagged by the noisy-neighbour detector (`apply(event)`) is queued one tier
lower until its cool-down ends.

Single event loop, no locks: grants are decided synchronously when a slot frees, so a
slot is never idle while someone waits, and a waiter cancelled at any point (client
disconnect) leaves the queue or gives its slot back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from tenantserve.errors import ConfigError
from tenantserve.scheduling.noisy_neighbor import NoisyNeighborEvent
from tenantserve.scheduling.queue_types import (
    FairQueueStats,
    Grant,
    QueueFull,
    Shed,
    SlotUsage,
    Ticket,
)
from tenantserve.scheduling.vtc import VirtualTokenCounter
from tenantserve.tiers import Tier

# Lowest priority first.
_TIERS_ASCENDING = tuple(sorted(Tier, key=lambda t: t.priority))


@dataclass(frozen=True)
class FairQueueConfig:
    """Capacity, queue bounds, aging, VTC weights and overload behaviour of one pool."""

    max_in_flight: int = 64
    # Slots a tier may take beyond max_in_flight, so that a premium request does not wait
    # for a free one to finish: the engine preempts the lowest tier to make room for it.
    priority_headroom: Mapping[Tier, int] = field(default_factory=lambda: {Tier.PREMIUM: 2})
    # Waiters per tier beyond which a new request of the tier gets QueueFull.
    max_waiting_per_tier: Mapping[Tier, int] = field(
        default_factory=lambda: {Tier.FREE: 64, Tier.STANDARD: 256, Tier.PREMIUM: 256}
    )
    # Waiters of all tiers together beyond which the lowest tier is shed.
    max_waiting: int = 512
    # A waiting request's tier gains one priority level per this many seconds.
    aging_s: float = 10.0
    input_weight: float = 1.0
    output_weight: float = 2.0
    # How long a tenant flagged as a noisy neighbour is queued one tier lower.
    demotion_cooldown_s: float = 60.0
    # Retry-After bounds, and its value before any service rate is known.
    min_retry_after_s: float = 1.0
    max_retry_after_s: float = 60.0
    default_retry_after_s: float = 1.0
    # Recent releases over which the service rate is measured.
    rate_window: int = 128

    @property
    def max_headroom(self) -> int:
        """The most slots any tier may take beyond `max_in_flight`."""
        return max(self.priority_headroom.values(), default=0)

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if any(self.max_waiting_per_tier.get(t, -1) < 0 for t in Tier):
            raise ConfigError("max_waiting_per_tier needs a bound >= 0 for every tier")
        if self.max_waiting < 0:
            raise ConfigError(f"max_waiting must be >= 0, got {self.max_waiting}")
        if self.aging_s <= 0:
            raise ConfigError(f"aging_s must be > 0, got {self.aging_s}")
        if self.input_weight <= 0 or self.output_weight <= 0:
            raise ConfigError("VTC input and output weights must be > 0")
        if not 0 < self.min_retry_after_s <= self.max_retry_after_s:
            raise ConfigError("need 0 < min_retry_after_s <= max_retry_after_s")
        if self.rate_window < 2:
            raise ConfigError("rate_window must be at least 2")


@dataclass(eq=False)
class _Waiter:
    ticket: Ticket
    tier: Tier
    seq: int
    future: asyncio.Future[Grant]
    queued: bool = True


class FairQueue:
    """Admission to one pool's engine: `grant = await acquire(t)` … `release(grant, in, out)`
    exactly once (or `async with slot(t) as s:`); single event loop."""

    def __init__(
        self, config: FairQueueConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = cfg = config or FairQueueConfig()
        self.clock = clock
        self._vtc = {t: VirtualTokenCounter(cfg.input_weight, cfg.output_weight) for t in Tier}
        # tier -> tenant -> that tenant's waiters, oldest first; a tenant key exists only
        # while it has waiters (it is then in the tier's VTC backlog).
        self._queues: dict[Tier, dict[str, deque[_Waiter]]] = {t: {} for t in Tier}
        self._num_waiting: Counter[Tier] = Counter()
        self._waiting_cost: dict[Tier, float] = {t: 0.0 for t in Tier}
        self._active: dict[int, Grant] = {}
        self._ids = itertools.count()
        # (release time, weighted tokens served) of recent releases.
        self._served: deque[tuple[float, float]] = deque(maxlen=cfg.rate_window)
        self._rejected: Counter[Tier] = Counter()
        self._shed: Counter[Tier] = Counter()
        self._demoted_until: dict[str, float] = {}

    # -- the slot API ---------------------------------------------------------------------

    async def acquire(self, ticket: Ticket) -> Grant:
        """A slot for the ticket, at once if one is free, else when the policy picks it.

        Raises QueueFull or Shed under overload. If cancelled while waiting, the ticket
        leaves the queue; if cancelled just after being granted, the slot is released.
        """
        tier = self._scheduling_tier(ticket)
        if len(self._active) < self._capacity(tier) and not self._waiting_at_or_above(tier):
            return self._grant(ticket, tier)
        self._make_room(tier)
        waiter = _Waiter(ticket, tier, next(self._ids), asyncio.get_running_loop().create_future())
        self._enqueue(waiter)
        self._dispatch()  # a slot may be free: the waiters ahead were all cancelled
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result(), input_tokens=0, output_tokens=0)
            else:
                self._unlink(waiter)
            raise

    def release(self, grant: Grant, input_tokens: int, output_tokens: int) -> None:
        """Give the slot back with the true token counts, and grant it on. Idempotent."""
        if self._active.pop(grant.grant_id, None) is None:
            return
        tenant_id = grant.ticket.tenant_id
        vtc = self._vtc[grant.tier]
        # The estimated input was charged at grant; correct it and add the output.
        vtc.charge(tenant_id, input_tokens - grant.ticket.est_input_tokens, output_tokens)
        served = vtc.cost(input_tokens, output_tokens)
        if served > 0:
            self._served.append((self.clock(), served))
        self._dispatch()

    @contextlib.asynccontextmanager
    async def slot(self, ticket: Ticket) -> AsyncIterator[SlotUsage]:
        """Hold a slot for the block; released on exit with the usage recorded in it."""
        grant = await self.acquire(ticket)
        usage = SlotUsage(grant, input_tokens=ticket.est_input_tokens)
        try:
            yield usage
        finally:
            self.release(grant, usage.input_tokens, usage.output_tokens)

    # -- noisy neighbours -------------------------------------------------------------------

    def apply(self, event: NoisyNeighborEvent) -> None:
        """Act on a detector event: queue the tenant one tier lower for the cool-down."""
        if event.action == "demote":
            self._demoted_until[event.tenant_id] = self.clock() + self.config.demotion_cooldown_s

    # -- metrics ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def tenant_load(self, tenant_id: str) -> int:
        """The tenant's requests here: holding a slot or waiting for one."""
        active = sum(1 for g in self._active.values() if g.ticket.tenant_id == tenant_id)
        return active + sum(len(q.get(tenant_id, ())) for q in self._queues.values())

    @property
    def num_waiting(self) -> int:
        return sum(self._num_waiting.values())

    def stats(self) -> FairQueueStats:
        """A snapshot of the queue's state for metrics; does not change it."""
        now = self.clock()
        return FairQueueStats(
            in_flight=len(self._active),
            waiting={t: self._num_waiting[t] for t in Tier},
            counters={t: self._vtc[t].counters() for t in Tier},
            rejected={t: self._rejected[t] for t in Tier},
            shed={t: self._shed[t] for t in Tier},
            demoted_until={k: u for k, u in self._demoted_until.items() if u > now},
        )

    # -- internals --------------------------------------------------------------------------

    def _scheduling_tier(self, ticket: Ticket) -> Tier:
        until = self._demoted_until.get(ticket.tenant_id)
        if until is None:
            return ticket.tier
        if until <= self.clock():
            del self._demoted_until[ticket.tenant_id]
            return ticket.tier
        return _TIERS_ASCENDING[max(0, _TIERS_ASCENDING.index(ticket.tier) - 1)]

    def _grant(self, ticket: Ticket, tier: Tier) -> Grant:
        grant = Grant(next(self._ids), ticket, tier, self.clock())
        self._active[grant.grant_id] = grant
        self._vtc[tier].charge(ticket.tenant_id, input_tokens=ticket.est_input_tokens)
        return grant

    def _make_room(self, tier: Tier) -> None:
        """Raise if a request of `tier` may not wait now; evict a lower waiter if needed."""
        if self._num_waiting[tier] >= self.config.max_waiting_per_tier[tier]:
            self._rejected[tier] += 1
            raise QueueFull(tier, self._retry_after_s(tier))
        while self.num_waiting >= self.config.max_waiting:
            victim = self._newest_waiter_below(tier)
            if victim is None:
                self._shed[tier] += 1
                raise Shed(self._retry_after_s(tier))
            self._unlink(victim)
            if not victim.future.done():  # else it was cancelled: leaving is enough
                self._shed[victim.tier] += 1
                victim.future.set_exception(Shed(self._retry_after_s(victim.tier)))

    def _newest_waiter_below(self, tier: Tier) -> _Waiter | None:
        for lower in _TIERS_ASCENDING:
            if lower.priority >= tier.priority:
                return None
            if self._queues[lower]:
                return max((q[-1] for q in self._queues[lower].values()), key=lambda w: w.seq)
        return None

    def _enqueue(self, waiter: _Waiter) -> None:
        tenant_id, tier = waiter.ticket.tenant_id, waiter.tier
        tenants = self._queues[tier]
        if tenant_id not in tenants:
            tenants[tenant_id] = deque()
            self._vtc[tier].enter_backlog(tenant_id)
        tenants[tenant_id].append(waiter)
        self._num_waiting[tier] += 1
        self._waiting_cost[tier] += self._est_cost(waiter.ticket)

    def _unlink(self, waiter: _Waiter) -> None:
        """Take the waiter out of its queue (no-op if already out)."""
        if not waiter.queued:
            return
        waiter.queued = False
        tenant_id, tier = waiter.ticket.tenant_id, waiter.tier
        waiters = self._queues[tier][tenant_id]
        waiters.remove(waiter)
        if not waiters:
            del self._queues[tier][tenant_id]
            self._vtc[tier].leave_backlog(tenant_id)
        self._num_waiting[tier] -= 1
        self._waiting_cost[tier] -= self._est_cost(waiter.ticket)
        if self._num_waiting[tier] == 0:
            self._waiting_cost[tier] = 0.0  # no float drift when the tier drains

    def _capacity(self, tier: Tier) -> int:
        return self.config.max_in_flight + self.config.priority_headroom.get(tier, 0)

    def _waiting_at_or_above(self, tier: Tier) -> bool:
        return any(self._num_waiting[t] for t in Tier if t.priority >= tier.priority)

    def _dispatch(self) -> None:
        while True:
            waiter = self._next_waiter()
            # The policy's pick goes first; if it has no room, nobody behind it goes.
            if waiter is None or len(self._active) >= self._capacity(waiter.tier):
                return
            self._unlink(waiter)
            if waiter.future.done():
                continue  # cancelled; its task has not yet run to take it out
            waiter.future.set_result(self._grant(waiter.ticket, waiter.tier))

    def _next_waiter(self) -> _Waiter | None:
        now = self.clock()
        best: tuple[int, int] | None = None
        chosen: Tier | None = None
        for tier in _TIERS_ASCENDING:
            tenants = self._queues[tier]
            if not tenants:
                continue
            oldest = min(q[0].ticket.arrival_time for q in tenants.values())
            key = (
                tier.priority + int(max(0.0, now - oldest) // self.config.aging_s),
                tier.priority,
            )
            if best is None or key > best:
                best, chosen = key, tier
        if chosen is None:
            return None
        tenants = self._queues[chosen]
        tenant_id = self._vtc[chosen].select(tie_break=lambda t: tenants[t][0].seq)
        assert tenant_id is not None  # the tier has waiters, so its VTC has a backlog
        return tenants[tenant_id][0]

    def _est_cost(self, ticket: Ticket) -> float:
        cfg = self.config
        return (
            cfg.input_weight * ticket.est_input_tokens
            + cfg.output_weight * ticket.est_output_tokens
        )

    def _retry_after_s(self, tier: Tier) -> float:
        cfg = self.config
        ahead = sum(self._waiting_cost[t] for t in Tier if t.priority >= tier.priority)
        estimate = cfg.default_retry_after_s
        if len(self._served) >= 2:
            span_s = self._served[-1][0] - self._served[0][0]
            served = sum(cost for _, cost in itertools.islice(self._served, 1, None))
            if span_s > 0 and served > 0:
                estimate = ahead / (served / span_s)
        return min(max(estimate, cfg.min_retry_after_s), cfg.max_retry_after_s)
