"""VirtualTokenCounter: fair share between the tenants of one group (VTC, Sheng et al. OSDI'24).

Each tenant has a counter W of the weighted service it received,
`W += input_weight·input_tokens + output_weight·output_tokens`, and the backlogged tenant
with the least W is served next. When a tenant becomes backlogged again, W is lifted to
the least W among the tenants backlogged now (or, when none is, to the W of the tenant
that left the backlog last), so idling banks no credit. Between two tenants backlogged
over an interval, the difference in service stays within a bound set by the largest
single charge and what is in flight (the paper's Theorem 4.4).

Pure bookkeeping: no clock, no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable


class VirtualTokenCounter:
    """Counters and the backlogged set of one group; `select()` names who is served next."""

    def __init__(self, input_weight: float = 1.0, output_weight: float = 2.0) -> None:
        self.input_weight = input_weight
        self.output_weight = output_weight
        self._counters: dict[str, float] = {}
        self._backlogged: set[str] = set()
        # W of the tenant whose departure last emptied the backlog (the paper's `l`).
        self._last_left = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Weighted service of that many tokens; negative counts give a refund."""
        return self.input_weight * input_tokens + self.output_weight * output_tokens

    def counter(self, tenant_id: str) -> float:
        """The tenant's W (0 for a tenant never seen)."""
        return self._counters.get(tenant_id, 0.0)

    def counters(self) -> dict[str, float]:
        """A copy of every tenant's W."""
        return dict(self._counters)

    @property
    def backlogged(self) -> frozenset[str]:
        return frozenset(self._backlogged)

    def charge(self, tenant_id: str, input_tokens: int = 0, output_tokens: int = 0) -> float:
        """Add service to the tenant's W (negative counts correct an over-estimate); new W."""
        w = self.counter(tenant_id) + self.cost(input_tokens, output_tokens)
        self._counters[tenant_id] = w
        return w

    def enter_backlog(self, tenant_id: str) -> None:
        """The tenant has work waiting; lifts W if it was not backlogged. Idempotent."""
        if tenant_id in self._backlogged:
            return
        floor = (
            min(self._counters[t] for t in self._backlogged)
            if self._backlogged
            else self._last_left
        )
        self._counters[tenant_id] = max(self.counter(tenant_id), floor)
        self._backlogged.add(tenant_id)

    def leave_backlog(self, tenant_id: str) -> None:
        """The tenant has nothing waiting any more. Idempotent."""
        if tenant_id not in self._backlogged:
            return
        self._backlogged.discard(tenant_id)
        if not self._backlogged:
            self._last_left = self.counter(tenant_id)

    def select(self, tie_break: Callable[[str], float] | None = None) -> str | None:
        """The backlogged tenant with the least W (ties: least `tie_break`, then id); None if
        nobody is backlogged. Does not change any counter."""
        if not self._backlogged:
            return None

        def key(t: str) -> tuple[float, float, str]:
            return (self._counters[t], tie_break(t) if tie_break else 0.0, t)

        return min(self._backlogged, key=key)
