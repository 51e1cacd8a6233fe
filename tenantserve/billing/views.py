"""The JSON (and CSV) shapes of billing, shared by the API and the CLI. Money leaves as
decimal strings ("12.500000"), never JSON numbers (which clients read as floats)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal
from typing import Any

from tenantserve.billing.costs import CostReport
from tenantserve.billing.credits import CreditGrant
from tenantserve.billing.invoice import CreditNote, Invoice, InvoiceLine
from tenantserve.billing.money import usd_str
from tenantserve.billing.pricebook import EngineCost, PlatformFee, PriceBook, TokenPrice
from tenantserve.billing.service import Generated, Reproduction
from tenantserve.billing.stripe_export import ExportResult

CSV_COLUMNS = (
    "invoice_id",
    "tenant_id",
    "period",
    "status",
    "line_key",
    "kind",
    "description",
    "model",
    "adapter_class",
    "tier",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "input_usd_per_mtok",
    "cached_input_usd_per_mtok",
    "output_usd_per_mtok",
    "quantity",
    "unit_usd",
    "amount_usd",
)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}" if value else "0"


def line_json(line: InvoiceLine) -> dict[str, Any]:
    return {
        "line_key": line.line_key,
        "kind": line.kind.value,
        "description": line.description,
        "model": line.model or None,
        "adapter_class": line.adapter_class or None,
        "tier": line.tier or None,
        "input_tokens": line.input_tokens,
        "cached_input_tokens": line.cached_input_tokens,
        "output_tokens": line.output_tokens,
        "input_usd_per_mtok": _dec(line.input_usd_per_mtok),
        "cached_input_usd_per_mtok": _dec(line.cached_input_usd_per_mtok),
        "output_usd_per_mtok": _dec(line.output_usd_per_mtok),
        "quantity": _dec(line.quantity),
        "unit_usd": None if line.unit_usd is None else usd_str(line.unit_usd),
        "amount_usd": usd_str(line.amount_usd),
    }


def credit_note_json(note: CreditNote) -> dict[str, Any]:
    return {
        "id": note.id,
        "object": "credit_note",
        "invoice_id": note.invoice_id,
        "tenant_id": note.tenant_id,
        "amount_usd": usd_str(note.amount_usd),
        "reason": note.reason,
        "lines": [{"line_key": k, "amount_usd": usd_str(a)} for k, a in note.lines],
        "created_at": _iso(note.created_at),
    }


def invoice_json(invoice: Invoice, with_lines: bool = True) -> dict[str, Any]:
    """`{"id", "object": "invoice", "tenant_id", "period", "status", "currency",
    "subtotal_usd", "credits_usd", "total_usd", "credited_usd", "lines", "credit_notes",
    "generated_at", "finalized_at", "stripe_invoice_id"}`."""
    out: dict[str, Any] = {
        "id": invoice.id,
        "object": "invoice",
        "tenant_id": invoice.tenant_id,
        "period": str(invoice.period),
        "status": invoice.status.value,
        "currency": invoice.currency,
        "subtotal_usd": usd_str(invoice.subtotal_usd),
        "credits_usd": usd_str(invoice.credits_usd),
        "total_usd": usd_str(invoice.total_usd),
        "credited_usd": usd_str(invoice.credited_usd),
        "generated_at": _iso(invoice.generated_at),
        "finalized_at": _iso(invoice.finalized_at),
        "stripe_invoice_id": invoice.stripe_invoice_id,
        "credit_notes": [credit_note_json(n) for n in invoice.credit_notes],
    }
    if with_lines:
        out["lines"] = [line_json(ln) for ln in invoice.lines]
    return out


def invoice_csv(invoice: Invoice) -> str:
    """One row per line (`CSV_COLUMNS`), then a `total` row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    head = [invoice.id, invoice.tenant_id, str(invoice.period), invoice.status.value]
    for line in invoice.lines:
        data = line_json(line)
        writer.writerow(head + ["" if data[c] is None else data[c] for c in CSV_COLUMNS[4:]])
    total = ["total", "", "Total", *[""] * 11, usd_str(invoice.total_usd)]
    writer.writerow(head + total)
    return buffer.getvalue()


def generated_json(g: Generated) -> dict[str, Any]:
    """The invoice, with what `generate` did to it: `"outcome"` is created, updated,
    unchanged or finalized (left alone)."""
    return {**invoice_json(g.invoice), "outcome": g.outcome}


def reproduction_json(r: Reproduction) -> dict[str, Any]:
    def counts(q: dict[str, tuple[int, int, int]]) -> dict[str, dict[str, int]]:
        names = ("input_tokens", "cached_input_tokens", "output_tokens")
        return {k: dict(zip(names, v, strict=True)) for k, v in sorted(q.items())}

    return {
        "object": "invoice_reproduction",
        "invoice_id": r.invoice_id,
        "matches": r.matches,
        "invoiced": counts(r.invoiced),
        "from_events": counts(r.from_events),
    }


def export_json(invoice_id: str, result: ExportResult) -> dict[str, Any]:
    return {
        "object": "invoice_export",
        "invoice_id": invoice_id,
        "provider": "stripe",
        "customer_id": result.customer_id,
        "provider_invoice_id": result.invoice_id,
        "item_idempotency_keys": list(result.item_keys),
    }


def token_price_json(p: TokenPrice) -> dict[str, Any]:
    return {
        "id": p.id,
        "kind": "tokens",
        "model": p.model,
        "adapter_class": p.adapter_class.value,
        "tier": p.tier.value,
        "input_usd_per_mtok": _dec(p.input_usd_per_mtok),
        "cached_input_usd_per_mtok": _dec(p.cached_input_usd_per_mtok),
        "output_usd_per_mtok": _dec(p.output_usd_per_mtok),
        "effective_from": _iso(p.effective_from),
    }


def platform_fee_json(f: PlatformFee) -> dict[str, Any]:
    return {
        "id": f.id,
        "kind": "platform_fee",
        "tier": f.tier.value,
        "usd_per_month": _dec(f.usd_per_month),
        "effective_from": _iso(f.effective_from),
    }


def engine_cost_json(c: EngineCost) -> dict[str, Any]:
    return {
        "id": c.id,
        "kind": "engine_cost",
        "usd_per_engine_hour": _dec(c.usd_per_engine_hour),
        "effective_from": _iso(c.effective_from),
    }


def price_book_json(book: PriceBook) -> dict[str, Any]:
    """Every version, oldest first within each kind."""

    def key(e: TokenPrice | PlatformFee | EngineCost) -> tuple[datetime, int]:
        return (e.effective_from, e.id or 0)

    prices = sorted(book.token_prices, key=lambda p: (p.tier.priority, p.model, *key(p)))
    return {
        "object": "price_book",
        "token_prices": [token_price_json(p) for p in prices],
        "platform_fees": [
            platform_fee_json(f)
            for f in sorted(book.platform_fees, key=lambda f: (f.tier.priority, *key(f)))
        ],
        "engine_costs": [engine_cost_json(c) for c in sorted(book.engine_costs, key=key)],
    }


def credit_json(g: CreditGrant) -> dict[str, Any]:
    return {
        "id": g.id,
        "object": "credit_grant",
        "tenant_id": g.tenant_id,
        "amount_usd": usd_str(g.amount_usd),
        "remaining_usd": usd_str(g.remaining_usd),
        "granted_at": _iso(g.granted_at),
        "expires_at": _iso(g.expires_at),
        "reason": g.reason,
        "credit_note_id": g.credit_note_id,
    }


def costs_json(report: CostReport) -> dict[str, Any]:
    """Per tenant: engine-seconds, internal cost, revenue (invoice subtotal), margin."""
    return {
        "object": "cost_report",
        "period": str(report.period),
        "data": [
            {
                "tenant_id": t.tenant_id,
                "engine_seconds": _dec(t.engine_seconds),
                "cost_usd": usd_str(t.cost_usd),
                "revenue_usd": None if t.revenue_usd is None else usd_str(t.revenue_usd),
                "margin_usd": None if t.margin_usd is None else usd_str(t.margin_usd),
            }
            for t in report.tenants
        ],
        "total": {
            "cost_usd": usd_str(report.cost_usd),
            "revenue_usd": usd_str(report.revenue_usd),
            "margin_usd": usd_str(report.revenue_usd - report.cost_usd),
        },
    }
