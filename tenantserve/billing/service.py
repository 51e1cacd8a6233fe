"""`BillingService`: invoice use cases over a unit of work.

generate(period, tenant?)   per tenant, one transaction: compute from the hour buckets,
                            the tier history, the credit grants and the price book;
                            create the draft or recompute it in place (same id); a
                            finalized invoice is left alone (refused when named)
finalize(id)                draft -> finalized (immutable), once the period is over
credit_note(id, ...)        a correction of a finalized invoice (an amount, or the
                            difference a recomputation shows); it becomes a credit
                            grant that later invoices draw on
reproduce(id)               recompute the usage lines from `usage_events` (the same
                            billing rule) and compare with the invoice's
export(id)                  a finalized invoice to the payment provider
grant_credit / credits      credit grants
costs(period)               engine cost per tenant beside its invoice's revenue
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from tenantserve.billing.calculator import Computation, compute_invoice, usage_lines
from tenantserve.billing.costs import CostReport, allocate_costs
from tenantserve.billing.credits import (
    CreditGrant,
    credit_note_grant_id,
    new_grant_id,
    validate_reason,
)
from tenantserve.billing.invoice import (
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
    invoice_id,
    new_credit_note_id,
)
from tenantserve.billing.invoice_repository import DuplicateInvoiceError
from tenantserve.billing.money import ZERO, parse_usd
from tenantserve.billing.period import BillingPeriod
from tenantserve.billing.stripe_export import ExportResult, InvoiceExporter
from tenantserve.billing.unit_of_work import BillingUnitOfWork
from tenantserve.errors import ConfigError, InvalidRequestError, NotFoundError

Outcome = Literal["created", "updated", "unchanged", "finalized"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Generated:
    """What `generate` did for one tenant; `finalized`: left alone."""

    tenant_id: str
    outcome: Outcome
    invoice: Invoice


@dataclass(frozen=True)
class Reproduction:
    """The invoice's usage quantities against those recomputed from the events."""

    invoice_id: str
    matches: bool
    # line_key -> (input, cached input, output) tokens
    invoiced: dict[str, tuple[int, int, int]]
    from_events: dict[str, tuple[int, int, int]]


def _quantities(lines: Sequence[InvoiceLine]) -> dict[str, tuple[int, int, int]]:
    return {
        ln.line_key: (ln.input_tokens, ln.cached_input_tokens, ln.output_tokens)
        for ln in lines
        if ln.kind is LineKind.USAGE
    }


def _by_group(lines: Sequence[InvoiceLine]) -> dict[str, Decimal]:
    """Charged amounts per line key less its price version ("usage:m:base:free")."""
    out: dict[str, Decimal] = {}
    for line in lines:
        if line.kind is not LineKind.CREDIT:
            group = line.line_key.rsplit(":", 1)[0]
            out[group] = out.get(group, ZERO) + line.amount_usd
    return out


class BillingService:
    """Invoices, credit notes, credits and the cost report (see the module docstring)."""

    def __init__(
        self,
        uow_factory: Callable[[], BillingUnitOfWork],
        exporter: InvoiceExporter | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow = uow_factory
        self._exporter = exporter
        self._clock = clock

    async def generate(
        self,
        period: str,
        tenant_id: str | None = None,
        progress: Callable[[Generated], None] | None = None,
    ) -> list[Generated]:
        """Each tenant's invoice for `period` (every tenant that existed before it ended,
        or only `tenant_id`), created or recomputed in place; `progress` is called after
        each tenant. A named tenant's finalized invoice is refused (InvoiceFinalizedError)."""
        billed = BillingPeriod.parse(period)
        async with self._uow() as uow:
            tenants = await uow.usage.billable_tenants(billed)
        if tenant_id is not None:
            if tenant_id not in tenants:
                raise NotFoundError(f"no tenant {tenant_id!r} to bill in {billed}")
            tenants = [tenant_id]
        out = []
        for tenant in tenants:
            generated = await self._generate_one(tenant, billed)
            if tenant_id is not None and generated.outcome == "finalized":
                generated.invoice.require_draft()
            if progress is not None:
                progress(generated)
            out.append(generated)
        return out

    async def _generate_one(self, tenant_id: str, period: BillingPeriod) -> Generated:
        for attempt in range(2):
            try:
                return await self._compute_and_save(tenant_id, period)
            except DuplicateInvoiceError:
                if attempt:  # created concurrently; the second try updates it
                    raise
        raise AssertionError("unreachable")

    async def _compute_and_save(self, tenant_id: str, period: BillingPeriod) -> Generated:
        async with self._uow() as uow:
            existing = await uow.invoices.get_for(tenant_id, period, lock=True)
            if existing is not None and existing.is_finalized:
                return Generated(tenant_id, "finalized", existing)
            the_id = existing.id if existing is not None else invoice_id(tenant_id, period)
            computed = compute_invoice(
                period,
                await uow.usage.hour_rows(tenant_id, period),
                await uow.usage.tier_changes(tenant_id),
                await uow.credits.list(tenant_id, exclude_invoice=the_id, lock=True),
                await uow.prices.book(),
            )
            invoice = Invoice(
                the_id, tenant_id, period, InvoiceStatus.DRAFT, computed.lines, self._clock()
            )
            await uow.invoices.save(invoice, is_new=existing is None)
            await uow.credits.set_applications(the_id, computed.applications)
            await uow.commit()
        if existing is None:
            return Generated(tenant_id, "created", invoice)
        same = existing.lines == invoice.lines
        return Generated(tenant_id, "unchanged" if same else "updated", invoice)

    async def estimate(self, tenant_id: str, now: datetime) -> tuple[BillingPeriod, Computation]:
        """The invoice `generate` would write for the period containing `now`, computed
        as of `now` and never saved: nothing is created, no credit is drawn."""
        period = BillingPeriod.containing(now)
        async with self._uow() as uow:
            return period, compute_invoice(
                period,
                await uow.usage.hour_rows(tenant_id, period),
                await uow.usage.tier_changes(tenant_id),
                await uow.credits.list(tenant_id, exclude_invoice=invoice_id(tenant_id, period)),
                await uow.prices.book(),
            )

    async def get(self, invoice_id: str, tenant_id: str | None = None) -> Invoice:
        """The invoice; NotFoundError when there is none, or it is not `tenant_id`'s (the
        same error: another tenant's invoice does not exist for a tenant)."""
        async with self._uow() as uow:
            invoice = await uow.invoices.get(invoice_id, tenant_id)
        if invoice is None:
            raise NotFoundError(f"no invoice {invoice_id!r}")
        return invoice

    async def find(self, tenant_id: str, period: str) -> Invoice:
        """The tenant's invoice for `period`, or NotFoundError."""
        billed = BillingPeriod.parse(period)
        async with self._uow() as uow:
            invoice = await uow.invoices.get_for(tenant_id, billed)
        if invoice is None:
            raise NotFoundError(f"no invoice for tenant {tenant_id!r} in {billed}")
        return invoice

    async def list_invoices(
        self, tenant_id: str | None = None, period: str | None = None
    ) -> list[Invoice]:
        """Invoices (of `tenant_id`, of `period`), newest period first."""
        billed = BillingPeriod.parse(period) if period is not None else None
        async with self._uow() as uow:
            return await uow.invoices.list(tenant_id, billed)

    async def finalize(self, invoice_id: str) -> Invoice:
        """Draft -> finalized; InvoiceFinalizedError if it already is, InvoiceStateError
        before the period is over."""
        async with self._uow() as uow:
            invoice = await self._require(uow, invoice_id)
            invoice.finalize(self._clock())
            await uow.invoices.update_state(invoice)
            await uow.commit()
        return invoice

    async def credit_note(
        self, invoice_id: str, reason: str, amount_usd: object | None = None
    ) -> CreditNote:
        """A credit note against a finalized invoice: `amount_usd`, or (None) what a
        recomputation from today's data shows was over-billed per line. Never more than
        the invoice's charges less earlier notes. Its amount is granted to the tenant as a
        credit without expiry, which the next invoices draw on."""
        why = validate_reason(reason)
        now = self._clock()
        async with self._uow() as uow:
            invoice = await self._require(uow, invoice_id)
            invoice.require_finalized("issue a credit note")
            if amount_usd is None:
                lines = await self._overbilled(uow, invoice)
            else:
                amount = parse_usd(amount_usd, "amount_usd")
                lines = (("adjustment", amount),) if amount > 0 else ()
            total = sum((a for _, a in lines), ZERO)
            creditable = invoice.subtotal_usd - invoice.credited_usd
            if total <= 0:
                raise InvalidRequestError(f"nothing to credit on {invoice.id}: {total} USD")
            if total > creditable:
                raise InvalidRequestError(
                    f"a credit note of {total} USD exceeds what {invoice.id} still charges "
                    f"({creditable} USD after earlier notes)"
                )
            note = CreditNote(
                new_credit_note_id(), invoice.id, invoice.tenant_id, total, why, lines, now
            )
            await uow.invoices.add_credit_note(note)
            await uow.credits.add(
                CreditGrant(
                    id=credit_note_grant_id(note.id),
                    tenant_id=invoice.tenant_id,
                    amount_usd=total,
                    granted_at=now,
                    expires_at=None,
                    reason=f"credit note {note.id} on {invoice.id} ({invoice.period}): {why}",
                    remaining_usd=total,
                    credit_note_id=note.id,
                )
            )
            await uow.commit()
        return note

    async def _overbilled(
        self, uow: BillingUnitOfWork, invoice: Invoice
    ) -> tuple[tuple[str, Decimal], ...]:
        recomputed = compute_invoice(
            invoice.period,
            await uow.usage.hour_rows(invoice.tenant_id, invoice.period),
            await uow.usage.tier_changes(invoice.tenant_id),
            (),
            await uow.prices.book(),
        )
        # Compared per (model, adapter class, tier) and per fee tier, whatever the price
        # versions: a corrected price is a new version with a line key of its own.
        # Earlier notes' lines are taken off first: the same correction is credited once.
        now_amounts = _by_group(recomputed.lines)
        credited: dict[str, Decimal] = {}
        for note in invoice.credit_notes:
            for group, amount in note.lines:
                credited[group] = credited.get(group, ZERO) + amount
        out = []
        for group, amount in _by_group(invoice.lines).items():
            over = amount - now_amounts.get(group, ZERO) - credited.get(group, ZERO)
            if over > 0:
                out.append((group, over))
        return tuple(out)

    async def reproduce(self, invoice_id: str) -> Reproduction:
        """The invoice's usage quantities recomputed from `usage_events`; `matches` when
        they are the same line for line."""
        async with self._uow() as uow:
            invoice = await self._require(uow, invoice_id)
            rows = await uow.usage.event_rows(invoice.tenant_id, invoice.period)
            book = await uow.prices.book()
        from_events = _quantities(usage_lines(rows, book))
        invoiced = _quantities(invoice.lines)
        return Reproduction(invoice.id, invoiced == from_events, invoiced, from_events)

    async def export(self, invoice_id: str) -> ExportResult:
        """Send a finalized invoice to the payment provider (again: the same idempotency
        keys); the provider's ids are kept on the invoice."""
        if self._exporter is None:
            raise ConfigError("no payment provider: set TENANTSERVE_STRIPE_API_KEY")
        invoice = await self.get(invoice_id)
        invoice.require_finalized("export it")
        result = await self._exporter.export(invoice)
        async with self._uow() as uow:
            stored = await self._require(uow, invoice_id)
            stored.stripe_customer_id = result.customer_id
            stored.stripe_invoice_id = result.invoice_id
            stored.exported_at = self._clock()
            await uow.invoices.update_state(stored)
            await uow.commit()
        return result

    async def grant_credit(
        self,
        tenant_id: str,
        amount_usd: object,
        reason: str,
        expires_at: datetime | None = None,
    ) -> CreditGrant:
        """Grant the tenant credit that its invoices draw on until it expires."""
        amount = parse_usd(amount_usd, "amount_usd")
        if amount <= 0:
            raise InvalidRequestError("amount_usd must be more than 0")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequestError("expires_at must be in the future")
        grant = CreditGrant(
            new_grant_id(), tenant_id, amount, now, expires_at, validate_reason(reason), amount
        )
        async with self._uow() as uow:
            if not await uow.usage.tier_changes(tenant_id):
                raise NotFoundError(f"no tenant {tenant_id!r}")
            await uow.credits.add(grant)
            await uow.commit()
        return grant

    async def credits(self, tenant_id: str | None = None) -> list[CreditGrant]:
        """Grants (of `tenant_id`), oldest first, with their remaining balance."""
        async with self._uow() as uow:
            return await uow.credits.list(tenant_id)

    async def costs(self, period: str) -> CostReport:
        """Per tenant: engine-seconds and their internal cost in `period`, beside the
        subtotal of its invoice for the period (None until generated)."""
        billed = BillingPeriod.parse(period)
        async with self._uow() as uow:
            usage = await uow.usage.engine_rows(billed)
            invoices = await uow.invoices.list(period=billed)
            book = await uow.prices.book()
        revenue = {inv.tenant_id: inv.subtotal_usd for inv in invoices}
        return allocate_costs(billed, usage, revenue, book)

    async def _require(self, uow: BillingUnitOfWork, invoice_id: str) -> Invoice:
        invoice = await uow.invoices.get(invoice_id)
        if invoice is None:
            raise NotFoundError(f"no invoice {invoice_id!r}")
        return invoice
