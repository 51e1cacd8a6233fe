"""`SpendRoutes`: what the caller has spent so far in the open billing period.

    GET /v1/spend    the current UTC month priced now   -> spend estimate

The estimate (`BillingService.estimate`) is the invoice `BillingService.generate` would
write for the period at this moment (`billing.calculator.compute_invoice`: metered usage
to date at the price book's prices, the period's platform fee prorated by the tier
history, credits drawn), computed and never saved: nothing is created, no credit is
drawn. An answer:

    {"object": "spend_estimate", "tenant_id", "period": "YYYY-MM", "as_of",
     "usage_usd", "platform_fee_usd", "credits_usd", "total_usd", "lines": [line]}

Money as decimal strings (`billing/views.py`). Tokens metered but not yet aggregated
into hour buckets are not in it yet.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request

from tenantserve.billing.invoice import InvoiceLine, LineKind
from tenantserve.billing.money import ZERO, usd_str
from tenantserve.billing.service import BillingService
from tenantserve.billing.views import line_json
from tenantserve.gateway.auth import Authenticator


def _sum(lines: list[InvoiceLine], kind: LineKind) -> Decimal:
    return sum((ln.amount_usd for ln in lines if ln.kind is kind), ZERO)


class SpendRoutes:
    """Handler of `/v1/spend` (the authenticated tenant's own estimate); installs nothing
    when the app serves no billing."""

    def __init__(self, auth: Authenticator, billing: BillingService | None) -> None:
        self.auth = auth
        self.billing = billing

    def install(self, app: FastAPI) -> None:
        """Add `/v1/spend` to `app` (when billing is served)."""
        if self.billing is not None:
            app.add_api_route("/v1/spend", self.spend, methods=["GET"])

    async def spend(self, request: Request) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        now = datetime.now(UTC)
        return await self.estimate(ctx.tenant_id, now)

    async def estimate(self, tenant_id: str, now: datetime) -> dict[str, Any]:
        """The open period's invoice for `tenant_id` as of `now`, computed, not saved."""
        assert self.billing is not None
        period, computed = await self.billing.estimate(tenant_id, now)
        lines = computed.lines
        return {
            "object": "spend_estimate",
            "tenant_id": tenant_id,
            "period": str(period),
            "as_of": now.isoformat(),
            "usage_usd": usd_str(_sum(lines, LineKind.USAGE)),
            "platform_fee_usd": usd_str(_sum(lines, LineKind.PLATFORM_FEE)),
            "credits_usd": usd_str(-_sum(lines, LineKind.CREDIT)),
            "total_usd": usd_str(sum((ln.amount_usd for ln in lines), ZERO)),
            "lines": [line_json(ln) for ln in lines],
        }
