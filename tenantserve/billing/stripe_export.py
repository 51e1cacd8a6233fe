"""`StripeExporter`: a finalized invoice to Stripe through the official SDK.

    1. the tenant's customer: found by `metadata['tenant_id']` (Customer Search), else
       created with that metadata (Idempotency-Key "<tenant>:customer")
    2. one invoice item per non-zero line (credits negative), amounts in decimal cents
       (`unit_amount_decimal`, quantity 1), Idempotency-Key "<tenant>:<period>:<line_key>"
    3. the invoice, drawing the customer's pending items (Idempotency-Key
       "<tenant>:<period>:invoice"), sent for payment in `days_until_due` days

Every call carries an idempotency key derived from the invoice, so exporting again (a
retry, a crash half-way) sends the same keys and Stripe answers with what it made the
first time instead of billing twice (within Stripe's 24 h key window; the invoice keeps
the Stripe ids it got). The base URL is configurable (`TENANTSERVE_STRIPE_API_BASE`):
tests point it at a local recording server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import stripe

from tenantserve.billing.invoice import Invoice
from tenantserve.billing.money import cents
from tenantserve.errors import ConfigError, TenantServeError

DEFAULT_DAYS_UNTIL_DUE = 30
MAX_IDEMPOTENCY_KEY_CHARS = 255


class ExportError(TenantServeError):
    """The payment provider refused or failed; the message says what it answered."""


@dataclass(frozen=True)
class ExportResult:
    """Where the invoice went: the provider's customer and invoice ids, and the
    idempotency keys of the invoice items sent."""

    customer_id: str
    invoice_id: str
    item_keys: tuple[str, ...]


class InvoiceExporter(Protocol):
    """Sends a finalized invoice to a payment provider; safe to call again."""

    async def export(self, invoice: Invoice) -> ExportResult:
        """The provider's ids of the customer and invoice; ExportError on failure."""
        ...


def item_key(invoice: Invoice, line_key: str) -> str:
    """The idempotency key of one invoice item."""
    return f"{invoice.tenant_id}:{invoice.period}:{line_key}"[:MAX_IDEMPOTENCY_KEY_CHARS]


class StripeExporter:
    """`InvoiceExporter` on Stripe (`stripe.StripeClient`, async over httpx)."""

    def __init__(
        self,
        api_key: str | None,
        api_base: str | None = None,
        max_network_retries: int = 2,
        days_until_due: int = DEFAULT_DAYS_UNTIL_DUE,
    ) -> None:
        if not api_key:
            raise ConfigError("set TENANTSERVE_STRIPE_API_KEY to export invoices to Stripe")
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            http_client=stripe.HTTPXClient(),
            max_network_retries=max_network_retries,
        )
        self._days_until_due = days_until_due

    async def export(self, invoice: Invoice) -> ExportResult:
        try:
            customer_id = await self._customer(invoice.tenant_id)
            keys = []
            for line in invoice.lines:
                if line.amount_usd == 0:
                    continue
                key = item_key(invoice, line.line_key)
                await self._client.v1.invoice_items.create_async(
                    {
                        "customer": customer_id,
                        "currency": invoice.currency,
                        "unit_amount_decimal": cents(line.amount_usd),
                        "quantity": 1,
                        "description": f"{invoice.period}: {line.description}",
                        "metadata": _metadata(invoice, line_key=line.line_key),
                    },
                    {"idempotency_key": key},
                )
                keys.append(key)
            created = await self._client.v1.invoices.create_async(
                {
                    "customer": customer_id,
                    "currency": invoice.currency,
                    "collection_method": "send_invoice",
                    "days_until_due": self._days_until_due,
                    "pending_invoice_items_behavior": "include",
                    "description": f"tenantserve {invoice.period}",
                    "metadata": _metadata(invoice),
                },
                {"idempotency_key": item_key(invoice, "invoice")},
            )
        except stripe.StripeError as e:
            raise ExportError(f"Stripe refused the export of {invoice.id}: {e}") from e
        return ExportResult(customer_id, str(created.id), tuple(keys))

    async def _customer(self, tenant_id: str) -> str:
        """The Stripe customer of the tenant, created on first export."""
        found = await self._client.v1.customers.search_async(
            {"query": f"metadata['tenant_id']:'{tenant_id}'", "limit": 1}
        )
        if found.data:
            return str(found.data[0].id)
        created = await self._client.v1.customers.create_async(
            {"name": tenant_id, "metadata": {"tenant_id": tenant_id}},
            {"idempotency_key": f"{tenant_id}:customer"},
        )
        return str(created.id)


def _metadata(invoice: Invoice, **extra: str) -> dict[str, Any]:
    return {
        "tenant_id": invoice.tenant_id,
        "period": str(invoice.period),
        "invoice_id": invoice.id,
        **extra,
    }
