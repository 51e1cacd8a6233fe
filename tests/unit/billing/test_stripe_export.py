"""The Stripe export through the official SDK against a local recording server: request
paths, form fields and Idempotency-Key headers, and the same keys on a re-export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tenantserve.billing.invoice import Invoice, InvoiceLine, InvoiceStatus, LineKind
from tenantserve.billing.period import BillingPeriod
from tenantserve.billing.stripe_export import ExportError, StripeExporter
from tenantserve.errors import ConfigError
from tests.helpers.stripe_server import FakeStripe, fake_stripe

TENANT = "ten_aaaaaaaaaaaaaaaa"


@pytest.fixture
def stripe_server() -> Iterator[FakeStripe]:
    with fake_stripe() as server:
        yield server


def _invoice() -> Invoice:
    lines = [
        InvoiceLine(
            "usage:smollm2@1:base:standard:p3",
            LineKind.USAGE,
            "smollm2@1 (base model), standard tier: tokens",
            Decimal("1.234567"),
        ),
        InvoiceLine("fee:standard:p8", LineKind.PLATFORM_FEE, "Platform fee", Decimal("49")),
        InvoiceLine("fee:free:p1", LineKind.PLATFORM_FEE, "Nothing", Decimal(0)),
        InvoiceLine("credit:cr_1", LineKind.CREDIT, "Credit: welcome", Decimal("-10")),
    ]
    return Invoice(
        "inv_x",
        TENANT,
        BillingPeriod(2026, 11),
        InvoiceStatus.FINALIZED,
        lines,
        datetime(2026, 12, 1, tzinfo=UTC),
    )


def _exporter(server: FakeStripe) -> StripeExporter:
    return StripeExporter("sk_test_123", server.url, max_network_retries=0)


async def test_export_creates_the_customer_the_items_and_the_invoice(
    stripe_server: FakeStripe,
) -> None:
    result = await _exporter(stripe_server).export(_invoice())
    calls = [(r.method, r.path) for r in stripe_server.requests]
    assert calls == [
        ("GET", "/v1/customers/search"),
        ("POST", "/v1/customers"),
        ("POST", "/v1/invoiceitems"),
        ("POST", "/v1/invoiceitems"),
        ("POST", "/v1/invoiceitems"),
        ("POST", "/v1/invoices"),
    ]
    search, customer, *items, invoice = stripe_server.requests
    assert search.query["query"] == f"metadata['tenant_id']:'{TENANT}'"
    assert customer.form["metadata[tenant_id]"] == TENANT
    assert customer.idempotency_key == f"{TENANT}:customer"
    assert customer.headers["authorization"] == "Bearer sk_test_123"
    # Zero lines are not sent; amounts are decimal cents; credits negative.
    assert [(i.form["unit_amount_decimal"], i.form["quantity"]) for i in items] == [
        ("123.4567", "1"),
        ("4900", "1"),
        ("-1000", "1"),
    ]
    assert [i.idempotency_key for i in items] == [
        f"{TENANT}:2026-11:usage:smollm2@1:base:standard:p3",
        f"{TENANT}:2026-11:fee:standard:p8",
        f"{TENANT}:2026-11:credit:cr_1",
    ]
    assert all(i.form["customer"] == "cus_0001" and i.form["currency"] == "usd" for i in items)
    assert items[0].form["metadata[line_key]"] == "usage:smollm2@1:base:standard:p3"
    assert invoice.form["pending_invoice_items_behavior"] == "include"
    assert invoice.form["collection_method"] == "send_invoice"
    assert invoice.form["metadata[invoice_id]"] == "inv_x"
    assert invoice.idempotency_key == f"{TENANT}:2026-11:invoice"
    assert (result.customer_id, result.invoice_id) == ("cus_0001", "in_0001")


async def test_a_re_export_sends_the_same_keys_and_bills_nothing_twice(
    stripe_server: FakeStripe,
) -> None:
    exporter = _exporter(stripe_server)
    first = await exporter.export(_invoice())
    sent_first = [r.idempotency_key for r in stripe_server.requests if r.method == "POST"]
    stripe_server.requests.clear()
    second = await exporter.export(_invoice())
    sent_second = [r.idempotency_key for r in stripe_server.requests if r.method == "POST"]
    # The customer is found by its metadata this time; the items and invoice carry the
    # same keys, so the (fake, like the real) API made nothing new.
    assert sent_second == sent_first[1:]
    assert second == first
    assert len(stripe_server.customers) == 1
    assert len(stripe_server.invoice_items) == 3
    assert len(stripe_server.invoices) == 1


async def test_a_refusal_is_an_export_error() -> None:
    with fake_stripe() as server:
        exporter = StripeExporter("sk_test_123", server.url + "/nowhere", max_network_retries=0)
        with pytest.raises(ExportError, match="inv_x"):
            await exporter.export(_invoice())


def test_exporting_needs_an_api_key() -> None:
    with pytest.raises(ConfigError, match="TENANTSERVE_STRIPE_API_KEY"):
        StripeExporter(None)
