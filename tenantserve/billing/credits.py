"""Credits (domain): grants of money a tenant's invoices draw on, and the pure rule that
applies them.

A grant has an amount, an optional expiry and a remaining balance (its amount less what
invoices have drawn). An invoice for a period draws on the grants made before the period
ends that are still unexpired at its end (a grant expiring exactly at the end still
covers the period), the soonest-expiring first (never-expiring last; then oldest first),
and never takes its total below zero.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tenantserve.billing.money import ZERO
from tenantserve.billing.period import BillingPeriod
from tenantserve.errors import InvalidRequestError

MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class CreditGrant:
    """Money granted to a tenant; `remaining_usd` is what invoices have not drawn yet."""

    id: str
    tenant_id: str
    amount_usd: Decimal
    granted_at: datetime
    expires_at: datetime | None
    reason: str
    remaining_usd: Decimal
    # Set when the grant carries a credit note's amount to later invoices.
    credit_note_id: str | None = None

    def usable_for(self, period: BillingPeriod) -> bool:
        """Whether an invoice of `period` may draw on it (made before the period ends,
        unexpired at its end, something left)."""
        unexpired = self.expires_at is None or self.expires_at >= period.end
        return self.granted_at < period.end and unexpired and self.remaining_usd > 0


@dataclass(frozen=True)
class CreditApplication:
    """`amount_usd` of grant `grant_id` drawn by one invoice."""

    grant_id: str
    amount_usd: Decimal


def application_order(grant: CreditGrant) -> tuple[bool, datetime, datetime, str]:
    """Soonest expiry first, never-expiring last, then oldest grant, then id."""
    expiry = grant.expires_at or grant.granted_at
    return (grant.expires_at is None, expiry, grant.granted_at, grant.id)


def apply_credits(
    grants: Iterable[CreditGrant], amount_usd: Decimal, period: BillingPeriod
) -> list[CreditApplication]:
    """How much of each usable grant an invoice of `period` owing `amount_usd` draws, in
    application order; the sum never exceeds `amount_usd` (nor any grant's remainder)."""
    left = max(amount_usd, ZERO)
    out: list[CreditApplication] = []
    for grant in sorted((g for g in grants if g.usable_for(period)), key=application_order):
        if left <= 0:
            break
        drawn = min(grant.remaining_usd, left)
        out.append(CreditApplication(grant.id, drawn))
        left -= drawn
    return out


def new_grant_id() -> str:
    return f"cr_{secrets.token_hex(10)}"


def credit_note_grant_id(credit_note_id: str) -> str:
    """The grant that carries a credit note's amount (one per note; stable)."""
    return "cr_" + hashlib.blake2b(credit_note_id.encode(), digest_size=10).hexdigest()


def validate_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        raise InvalidRequestError(f"reason must be 1 to {MAX_REASON_CHARS} characters")
    return reason
