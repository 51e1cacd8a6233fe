"""The invoice computation (pure): usage rows, tier history, credit grants and the price
book in, lines and credit applications out. The same inputs give the same lines, in the
same order, with the same keys.

    usage_lines     hour buckets (or events, for `reproduce`) summed per (model, adapter
                    class, tier, price version); the price is the one in effect at the
                    bucket's start. Input tokens not read from cache at the input price,
                    cached ones at the cached-input price, output at the output price.
    fee_lines       the monthly platform fee prorated by the seconds of the period spent
                    at each tier (from the tier history), split where a fee changes
    credit_lines    grants drawn in `credits.apply_credits` order, as negative lines
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from tenantserve.billing.credits import CreditApplication, CreditGrant, apply_credits
from tenantserve.billing.invoice import InvoiceLine, LineKind
from tenantserve.billing.money import TOKENS_PER_PRICE_UNIT, ZERO, round_usd
from tenantserve.billing.period import BillingPeriod
from tenantserve.billing.pricebook import AdapterClass, PlatformFee, PriceBook, TokenPrice
from tenantserve.tiers import Tier

FRACTION = Decimal("0.000000001")


@dataclass(frozen=True)
class UsageRow:
    """Billable tokens of one hour bucket (or one event) of one tenant."""

    bucket_start: datetime
    model: str
    adapter: str  # "" for the base model
    tier: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class TierChange:
    """From `effective_at` on, the tenant is at `tier`."""

    tier: Tier
    effective_at: datetime


@dataclass(frozen=True)
class Computation:
    """An invoice's lines and the credit it draws from each grant."""

    lines: list[InvoiceLine]
    applications: list[CreditApplication]


def _version(entry: TokenPrice | PlatformFee) -> str:
    return f"p{entry.id}" if entry.id is not None else "default"


def token_amount(price: TokenPrice, inp: int, cached: int, out: int) -> Decimal:
    """The exact price of these tokens (`inp` includes the `cached` ones), to the micro-dollar."""
    exact = (
        (inp - cached) * price.input_usd_per_mtok
        + cached * price.cached_input_usd_per_mtok
        + out * price.output_usd_per_mtok
    ) / TOKENS_PER_PRICE_UNIT
    return round_usd(exact)


def usage_lines(rows: Iterable[UsageRow], book: PriceBook) -> list[InvoiceLine]:
    """One line per (model, adapter class, tier, price version), sorted by key."""
    sums: dict[tuple[str, AdapterClass, str, str], list[int]] = {}
    prices: dict[tuple[str, AdapterClass, str, str], TokenPrice] = {}
    for row in rows:
        adapter_class = AdapterClass.of(row.adapter)
        price = book.token_price(row.model, adapter_class, Tier(row.tier), row.bucket_start)
        key = (row.model, adapter_class, row.tier, _version(price))
        prices[key] = price
        counts = sums.setdefault(key, [0, 0, 0])
        counts[0] += row.input_tokens
        counts[1] += row.cached_input_tokens
        counts[2] += row.output_tokens
    lines = []
    for key in sorted(sums):
        model, adapter_class, tier, version = key
        inp, cached, out = sums[key]
        price = prices[key]
        on = "base model" if adapter_class is AdapterClass.BASE else "adapter"
        lines.append(
            InvoiceLine(
                line_key=f"usage:{model}:{adapter_class.value}:{tier}:{version}",
                kind=LineKind.USAGE,
                description=f"{model} ({on}), {tier} tier: tokens",
                amount_usd=token_amount(price, inp, cached, out),
                model=model,
                adapter_class=adapter_class.value,
                tier=tier,
                input_tokens=inp,
                cached_input_tokens=cached,
                output_tokens=out,
                input_usd_per_mtok=price.input_usd_per_mtok,
                cached_input_usd_per_mtok=price.cached_input_usd_per_mtok,
                output_usd_per_mtok=price.output_usd_per_mtok,
                reference=version,
            )
        )
    return lines


def tier_segments(
    period: BillingPeriod, changes: Sequence[TierChange]
) -> list[tuple[Tier, datetime, datetime]]:
    """(tier, start, end) for each stretch of the period the tenant spent at one tier; none
    before the tenant's first change (its creation)."""
    ordered = sorted(changes, key=lambda c: c.effective_at)
    out: list[tuple[Tier, datetime, datetime]] = []
    for i, change in enumerate(ordered):
        until = ordered[i + 1].effective_at if i + 1 < len(ordered) else period.end
        start, end = max(change.effective_at, period.start), min(until, period.end)
        if end > start:
            out.append((change.tier, start, end))
    return out


def _seconds(span: timedelta) -> Decimal:
    """A duration in exact decimal seconds (no float)."""
    return Decimal(span.days * 86_400 + span.seconds) + Decimal(span.microseconds) / 1_000_000


def fee_lines(
    period: BillingPeriod, changes: Sequence[TierChange], book: PriceBook
) -> list[InvoiceLine]:
    """The platform fee of each tier, prorated by its share of the period's seconds."""
    seconds: dict[tuple[Tier, str], timedelta] = {}
    fees: dict[tuple[Tier, str], PlatformFee] = {}
    for tier, start, end in tier_segments(period, changes):
        cuts = [start, *book.fee_changes(tier, start, end), end]
        for a, b in itertools.pairwise(cuts):
            fee = book.platform_fee(tier, a)
            if fee is None or fee.usd_per_month == 0:
                continue
            key = (tier, _version(fee))
            fees[key] = fee
            seconds[key] = seconds.get(key, timedelta()) + (b - a)
    period_seconds = Decimal(period.seconds)
    lines = []
    for key in sorted(seconds, key=lambda k: (k[0].priority, k[1])):
        tier, version = key
        fee = fees[key]
        share = _seconds(seconds[key])
        lines.append(
            InvoiceLine(
                line_key=f"fee:{tier.value}:{version}",
                kind=LineKind.PLATFORM_FEE,
                description=(
                    f"Platform fee, {tier.value} tier: {share / 86_400:.2f} of "
                    f"{period.seconds // 86_400} days"
                ),
                amount_usd=round_usd(fee.usd_per_month * share / period_seconds),
                tier=tier.value,
                quantity=(share / period_seconds).quantize(FRACTION),
                unit_usd=fee.usd_per_month,
                reference=version,
            )
        )
    return lines


def credit_lines(
    grants: Iterable[CreditGrant], amount_usd: Decimal, period: BillingPeriod
) -> Computation:
    """The credit lines drawing on `grants` for an invoice owing `amount_usd`."""
    by_id = {g.id: g for g in grants}
    applications = apply_credits(by_id.values(), amount_usd, period)
    lines = []
    for application in applications:
        grant = by_id[application.grant_id]
        lines.append(
            InvoiceLine(
                line_key=f"credit:{grant.id}",
                kind=LineKind.CREDIT,
                description=f"Credit: {grant.reason}",
                amount_usd=-application.amount_usd,
                unit_usd=-application.amount_usd,
                reference=grant.id,
            )
        )
    return Computation(lines, applications)


def compute_invoice(
    period: BillingPeriod,
    usage: Iterable[UsageRow],
    tier_changes: Sequence[TierChange],
    grants: Iterable[CreditGrant],
    book: PriceBook,
) -> Computation:
    """Every line of an invoice: usage, then fees, then the credits they draw."""
    charged = usage_lines(usage, book) + fee_lines(period, tier_changes, book)
    subtotal = sum((ln.amount_usd for ln in charged), ZERO)
    credits = credit_lines(grants, subtotal, period)
    return Computation(charged + credits.lines, credits.applications)
