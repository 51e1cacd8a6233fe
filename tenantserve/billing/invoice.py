"""Invoices and credit notes (domain, no framework).

An invoice is one per (tenant, period), its id derived from both (`invoice_id`). While
a draft it is recomputed in place from the data (same id, same lines from the same
data); finalized, it never changes again: corrections are credit notes against it,
whose amounts later invoices draw on as credits.

Lines: `usage` per (model, adapter class, tier, price version), `platform_fee` per (tier,
fee version) prorated by time, `credit` per grant drawn (negative amounts).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from tenantserve.billing.money import ZERO
from tenantserve.billing.period import BillingPeriod
from tenantserve.errors import InvalidRequestError

CURRENCY = "usd"


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"


class LineKind(StrEnum):
    USAGE = "usage"
    PLATFORM_FEE = "platform_fee"
    CREDIT = "credit"


class InvoiceStateError(InvalidRequestError):
    """The invoice is not in a state that allows this (the gateway answers 409)."""

    code = "invoice_state"


class InvoiceFinalizedError(InvoiceStateError):
    """A finalized invoice never changes; issue a credit note instead."""

    code = "invoice_finalized"


class InvoiceNotFinalizedError(InvoiceStateError):
    """Only a finalized invoice can be credited or exported."""

    code = "invoice_not_finalized"


def invoice_id(tenant_id: str, period: BillingPeriod) -> str:
    """The id of the tenant's invoice for `period` (the same on every run and machine)."""
    digest = hashlib.blake2b(f"{tenant_id}:{period}".encode(), digest_size=12).hexdigest()
    return f"inv_{digest}"


def new_credit_note_id() -> str:
    return f"cn_{secrets.token_hex(10)}"


@dataclass(frozen=True)
class InvoiceLine:
    """One line; token counts for usage lines, `quantity` x `unit_usd` for fee lines
    (the fraction of the month at the tier x the monthly fee)."""

    line_key: str  # stable within the invoice: the same data gives the same keys
    kind: LineKind
    description: str
    amount_usd: Decimal
    model: str = ""
    adapter_class: str = ""
    tier: str = ""
    input_tokens: int = 0  # every input token, cached ones included
    cached_input_tokens: int = 0
    output_tokens: int = 0
    input_usd_per_mtok: Decimal | None = None
    cached_input_usd_per_mtok: Decimal | None = None
    output_usd_per_mtok: Decimal | None = None
    quantity: Decimal = Decimal(1)
    unit_usd: Decimal | None = None
    reference: str | None = None  # the price version, fee version or credit grant


@dataclass(frozen=True)
class CreditNote:
    """A correction of a finalized invoice; its amount becomes a credit grant that later
    invoices draw on. `lines` are `{"line_key", "amount_usd"}` (what each line is
    reduced by)."""

    id: str
    invoice_id: str
    tenant_id: str
    amount_usd: Decimal
    reason: str
    lines: tuple[tuple[str, Decimal], ...]
    created_at: datetime


@dataclass
class Invoice:
    """A tenant's invoice for one period (see the module docstring)."""

    id: str
    tenant_id: str
    period: BillingPeriod
    status: InvoiceStatus
    lines: list[InvoiceLine]
    generated_at: datetime
    finalized_at: datetime | None = None
    currency: str = CURRENCY
    credit_notes: list[CreditNote] = field(default_factory=list)
    stripe_customer_id: str | None = None
    stripe_invoice_id: str | None = None
    exported_at: datetime | None = None

    @property
    def subtotal_usd(self) -> Decimal:
        """Usage and fees, before credits."""
        return sum((ln.amount_usd for ln in self.lines if ln.kind is not LineKind.CREDIT), ZERO)

    @property
    def credits_usd(self) -> Decimal:
        """Credits drawn (a positive number)."""
        return -sum((ln.amount_usd for ln in self.lines if ln.kind is LineKind.CREDIT), ZERO)

    @property
    def total_usd(self) -> Decimal:
        return self.subtotal_usd - self.credits_usd

    @property
    def credited_usd(self) -> Decimal:
        """What credit notes have taken off this invoice so far."""
        return sum((n.amount_usd for n in self.credit_notes), ZERO)

    @property
    def is_finalized(self) -> bool:
        return self.status is InvoiceStatus.FINALIZED

    def require_draft(self) -> None:
        if self.is_finalized:
            raise InvoiceFinalizedError(
                f"invoice {self.id} ({self.tenant_id}, {self.period}) is finalized and "
                "cannot change; issue a credit note instead"
            )

    def require_finalized(self, action: str) -> None:
        if not self.is_finalized:
            raise InvoiceNotFinalizedError(
                f"invoice {self.id} is a draft; finalize it before you {action}"
            )

    def finalize(self, now: datetime) -> None:
        """Draft -> finalized, once the period is over."""
        self.require_draft()
        if now < self.period.end:
            raise InvoiceStateError(
                f"period {self.period} is not over until {self.period.end.isoformat()}; "
                "its invoice can only be finalized after that"
            )
        self.status = InvoiceStatus.FINALIZED
        self.finalized_at = now
