"""`InvoiceRepository`: invoices, their lines and credit notes in and out of the database,
as domain objects. Works inside the caller's transaction; it never commits."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.billing.invoice import (
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
)
from tenantserve.billing.money import usd_str
from tenantserve.billing.period import BillingPeriod
from tenantserve.billing.tables import credit_notes, invoice_lines, invoices


class DuplicateInvoiceError(Exception):
    """Another transaction inserted the tenant's invoice for the period first."""


class InvoiceRepository:
    """Invoices with their lines and credit notes."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, invoice_id: str, tenant_id: str | None = None) -> Invoice | None:
        """The invoice (only if it is `tenant_id`'s, when given), or None."""
        query = select(invoices).where(invoices.c.id == invoice_id)
        if tenant_id is not None:
            query = query.where(invoices.c.tenant_id == tenant_id)
        row = (await self._session.execute(query)).mappings().first()
        return None if row is None else await self._load(row)

    async def get_for(
        self, tenant_id: str, period: BillingPeriod, lock: bool = False
    ) -> Invoice | None:
        """The tenant's invoice for the period (row-locked on PostgreSQL with `lock`)."""
        query = select(invoices).where(
            invoices.c.tenant_id == tenant_id, invoices.c.period == str(period)
        )
        if lock:
            query = query.with_for_update()
        row = (await self._session.execute(query)).mappings().first()
        return None if row is None else await self._load(row)

    async def list(
        self, tenant_id: str | None = None, period: BillingPeriod | None = None
    ) -> builtins.list[Invoice]:
        """Invoices, newest period first, then by tenant."""
        query = select(invoices).order_by(invoices.c.period.desc(), invoices.c.tenant_id)
        if tenant_id is not None:
            query = query.where(invoices.c.tenant_id == tenant_id)
        if period is not None:
            query = query.where(invoices.c.period == str(period))
        rows = list((await self._session.execute(query)).mappings())
        return [await self._load(row) for row in rows]

    async def save(self, invoice: Invoice, is_new: bool) -> None:
        """Write the invoice and replace its lines; DuplicateInvoiceError when `is_new`
        and another transaction created it first (roll back and retry)."""
        values = {
            "tenant_id": invoice.tenant_id,
            "period": str(invoice.period),
            **_totals(invoice),
        }
        if is_new:
            try:
                await self._session.execute(insert(invoices).values(id=invoice.id, **values))
            except IntegrityError as e:
                raise DuplicateInvoiceError(invoice.id) from e
        else:
            await self._session.execute(
                update(invoices).where(invoices.c.id == invoice.id).values(**values)
            )
        await self._session.execute(
            delete(invoice_lines).where(invoice_lines.c.invoice_id == invoice.id)
        )
        if invoice.lines:
            await self._session.execute(
                insert(invoice_lines),
                [_line_row(invoice.id, i, line) for i, line in enumerate(invoice.lines, 1)],
            )

    async def update_state(self, invoice: Invoice) -> None:
        """Write the status and export fields (the lines never change after finalizing)."""
        await self._session.execute(
            update(invoices)
            .where(invoices.c.id == invoice.id)
            .values(
                status=invoice.status.value,
                finalized_at=invoice.finalized_at,
                stripe_customer_id=invoice.stripe_customer_id,
                stripe_invoice_id=invoice.stripe_invoice_id,
                exported_at=invoice.exported_at,
            )
        )

    async def add_credit_note(self, note: CreditNote) -> None:
        await self._session.execute(
            insert(credit_notes).values(
                id=note.id,
                invoice_id=note.invoice_id,
                tenant_id=note.tenant_id,
                amount_usd=note.amount_usd,
                reason=note.reason,
                lines=[{"line_key": k, "amount_usd": usd_str(a)} for k, a in note.lines],
                created_at=note.created_at,
            )
        )

    async def _load(self, row: RowMapping) -> Invoice:
        line_rows = await self._session.execute(
            select(invoice_lines)
            .where(invoice_lines.c.invoice_id == row["id"])
            .order_by(invoice_lines.c.line_no)
        )
        note_rows = await self._session.execute(
            select(credit_notes)
            .where(credit_notes.c.invoice_id == row["id"])
            .order_by(credit_notes.c.created_at, credit_notes.c.id)
        )
        return Invoice(
            id=row["id"],
            tenant_id=row["tenant_id"],
            period=BillingPeriod.parse(row["period"]),
            status=InvoiceStatus(row["status"]),
            lines=[_line(r) for r in line_rows.mappings()],
            generated_at=row["generated_at"],
            finalized_at=row["finalized_at"],
            currency=row["currency"],
            credit_notes=[_note(r) for r in note_rows.mappings()],
            stripe_customer_id=row["stripe_customer_id"],
            stripe_invoice_id=row["stripe_invoice_id"],
            exported_at=row["exported_at"],
        )


def _totals(invoice: Invoice) -> dict[str, Any]:
    return {
        "status": invoice.status.value,
        "currency": invoice.currency,
        "subtotal_usd": invoice.subtotal_usd,
        "credits_usd": invoice.credits_usd,
        "total_usd": invoice.total_usd,
        "generated_at": invoice.generated_at,
        "finalized_at": invoice.finalized_at,
    }


def _line_row(invoice_id: str, line_no: int, line: InvoiceLine) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "line_no": line_no,
        "line_key": line.line_key,
        "kind": line.kind.value,
        "description": line.description,
        "model": line.model,
        "adapter_class": line.adapter_class,
        "tier": line.tier,
        "input_tokens": line.input_tokens,
        "cached_input_tokens": line.cached_input_tokens,
        "output_tokens": line.output_tokens,
        "input_usd_per_mtok": line.input_usd_per_mtok,
        "cached_input_usd_per_mtok": line.cached_input_usd_per_mtok,
        "output_usd_per_mtok": line.output_usd_per_mtok,
        "quantity": line.quantity,
        "unit_usd": line.unit_usd,
        "amount_usd": line.amount_usd,
        "reference": line.reference,
    }


def _line(row: RowMapping) -> InvoiceLine:
    return InvoiceLine(
        line_key=row["line_key"],
        kind=LineKind(row["kind"]),
        description=row["description"],
        amount_usd=row["amount_usd"],
        model=row["model"],
        adapter_class=row["adapter_class"],
        tier=row["tier"],
        input_tokens=int(row["input_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        input_usd_per_mtok=row["input_usd_per_mtok"],
        cached_input_usd_per_mtok=row["cached_input_usd_per_mtok"],
        output_usd_per_mtok=row["output_usd_per_mtok"],
        quantity=row["quantity"],
        unit_usd=row["unit_usd"],
        reference=row["reference"],
    )


def _note(row: RowMapping) -> CreditNote:
    lines: Sequence[dict[str, str]] = row["lines"] or ()
    return CreditNote(
        id=row["id"],
        invoice_id=row["invoice_id"],
        tenant_id=row["tenant_id"],
        amount_usd=row["amount_usd"],
        reason=row["reason"],
        lines=tuple((ln["line_key"], Decimal(ln["amount_usd"])) for ln in lines),
        created_at=row["created_at"],
    )
