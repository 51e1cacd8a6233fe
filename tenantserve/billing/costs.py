"""Cost allocation (pure): each tenant's engine-seconds (GPU-seconds on a GPU) in a period
priced at the internal cost rate per engine-hour in effect at each hour bucket's start,
beside the revenue its invoice brings: the margin per tenant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tenantserve.billing.money import ZERO, round_usd
from tenantserve.billing.period import BillingPeriod
from tenantserve.billing.pricebook import PriceBook

SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True)
class EngineUsage:
    """One tenant's engine-seconds in one hour bucket."""

    tenant_id: str
    bucket_start: datetime
    engine_seconds: Decimal


@dataclass(frozen=True)
class TenantCost:
    """A tenant's internal cost and revenue in a period; `revenue_usd` is its invoice's
    subtotal (usage and fees, before credits), None when no invoice was generated."""

    tenant_id: str
    engine_seconds: Decimal
    cost_usd: Decimal
    revenue_usd: Decimal | None

    @property
    def margin_usd(self) -> Decimal | None:
        return None if self.revenue_usd is None else self.revenue_usd - self.cost_usd


@dataclass(frozen=True)
class CostReport:
    period: BillingPeriod
    tenants: list[TenantCost]

    @property
    def cost_usd(self) -> Decimal:
        return sum((t.cost_usd for t in self.tenants), ZERO)

    @property
    def revenue_usd(self) -> Decimal:
        return sum((t.revenue_usd or ZERO for t in self.tenants), ZERO)


def engine_seconds_decimal(value: float) -> Decimal:
    """Stored engine-seconds (a float sum) as a Decimal to the microsecond."""
    return Decimal(repr(value)).quantize(Decimal("0.000001"))


def allocate_costs(
    period: BillingPeriod,
    usage: Iterable[EngineUsage],
    revenue: Mapping[str, Decimal],
    book: PriceBook,
) -> CostReport:
    """Cost per tenant of `usage` (tenants with revenue but no usage appear at zero cost),
    by tenant id."""
    seconds: dict[str, Decimal] = {}
    exact_cost: dict[str, Decimal] = {}
    for u in usage:
        rate = book.engine_cost(u.bucket_start)
        per_hour = rate.usd_per_engine_hour if rate is not None else ZERO
        seconds[u.tenant_id] = seconds.get(u.tenant_id, ZERO) + u.engine_seconds
        exact_cost[u.tenant_id] = (
            exact_cost.get(u.tenant_id, ZERO) + u.engine_seconds * per_hour / SECONDS_PER_HOUR
        )
    tenants = sorted(set(seconds) | set(revenue))
    return CostReport(
        period,
        [
            TenantCost(
                tenant_id=t,
                engine_seconds=seconds.get(t, ZERO),
                cost_usd=round_usd(exact_cost.get(t, ZERO)),
                revenue_usd=revenue.get(t),
            )
            for t in tenants
        ],
    )
