"""The invoice computation: token pricing in Decimal, proration by tier history, credits,
and the same lines (keys, order, amounts) from the same inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tenantserve.billing.calculator import (
    TierChange,
    UsageRow,
    compute_invoice,
    fee_lines,
    tier_segments,
    usage_lines,
)
from tenantserve.billing.credits import CreditGrant
from tenantserve.billing.invoice import LineKind
from tenantserve.billing.period import BillingPeriod
from tenantserve.billing.pricebook import PlatformFee, PriceBook, TokenPrice, default_price_book
from tenantserve.tiers import Tier

NOV = BillingPeriod(2026, 11)
BOOK = default_price_book()


def _row(hour: int, adapter: str = "", tier: str = "standard", **tokens: int) -> UsageRow:
    counts = {"input_tokens": 1_000_000, "cached_input_tokens": 0, "output_tokens": 0} | tokens
    return UsageRow(NOV.start + timedelta(hours=hour), "m@1", adapter, tier, **counts)


def test_tokens_are_priced_exactly_per_kind() -> None:
    # 1M input of which 400k cached, 1M output at standard: 0.6*0.40 + 0.4*0.20 + 1.20.
    [line] = usage_lines([_row(0, cached_input_tokens=400_000, output_tokens=1_000_000)], BOOK)
    assert line.amount_usd == Decimal("1.52")
    assert isinstance(line.amount_usd, Decimal)
    assert (line.input_tokens, line.cached_input_tokens, line.output_tokens) == (
        1_000_000,
        400_000,
        1_000_000,
    )


def test_one_line_per_model_adapter_class_and_tier() -> None:
    rows = [_row(h) for h in range(3)] + [_row(1, adapter="t/a@1"), _row(2, tier="premium")]
    lines = usage_lines(rows, BOOK)
    assert [ln.line_key for ln in lines] == [
        "usage:m@1:adapter:standard:default",
        "usage:m@1:base:premium:default",
        "usage:m@1:base:standard:default",
    ]
    assert lines[2].input_tokens == 3_000_000
    assert lines[0].amount_usd == Decimal("0.48")  # adapter price: 20% more


def test_tiny_usage_still_costs_something() -> None:
    [line] = usage_lines([_row(0, input_tokens=7)], BOOK)
    assert line.amount_usd == Decimal("0.000003")  # 7 * 0.40 / 1M = 0.0000028


def test_the_same_inputs_give_the_same_lines() -> None:
    rows = [_row(h, output_tokens=h) for h in range(50)]
    changes = [TierChange(Tier.STANDARD, NOV.start - timedelta(days=3))]
    first = compute_invoice(NOV, rows, changes, (), BOOK)
    second = compute_invoice(NOV, list(reversed(rows)), changes, (), BOOK)
    assert first == second


def test_a_tier_change_mid_month_prorates_each_fee_by_seconds() -> None:
    changes = [
        TierChange(Tier.STANDARD, datetime(2026, 10, 5, tzinfo=UTC)),
        TierChange(Tier.PREMIUM, datetime(2026, 11, 11, tzinfo=UTC)),  # 10 days standard
        TierChange(Tier.FREE, datetime(2026, 11, 21, tzinfo=UTC)),  # 10 days premium
    ]
    lines = fee_lines(NOV, changes, BOOK)
    assert {ln.tier: ln.amount_usd for ln in lines} == {
        "standard": (Decimal(49) / 3).quantize(Decimal("0.000001")),
        "premium": (Decimal(499) / 3).quantize(Decimal("0.000001")),
    }  # free has no fee, no line
    assert [ln.quantity for ln in lines] == [Decimal("0.333333333")] * 2


def test_a_tenant_created_mid_month_pays_from_its_creation() -> None:
    segments = tier_segments(NOV, [TierChange(Tier.PREMIUM, datetime(2026, 11, 16, tzinfo=UTC))])
    assert segments == [(Tier.PREMIUM, datetime(2026, 11, 16, tzinfo=UTC), NOV.end)]
    [line] = fee_lines(NOV, [TierChange(Tier.PREMIUM, datetime(2026, 11, 16, tzinfo=UTC))], BOOK)
    assert line.amount_usd == Decimal("249.5")


def test_a_fee_change_mid_month_splits_the_fee() -> None:
    book = PriceBook(
        BOOK.token_prices,
        (
            PlatformFee(Tier.STANDARD, Decimal(30), datetime(2000, 1, 1, tzinfo=UTC), id=1),
            PlatformFee(Tier.STANDARD, Decimal(60), datetime(2026, 11, 16, tzinfo=UTC), id=2),
        ),
    )
    lines = fee_lines(NOV, [TierChange(Tier.STANDARD, NOV.start)], book)
    assert [(ln.line_key, ln.amount_usd) for ln in lines] == [
        ("fee:standard:p1", Decimal(15)),
        ("fee:standard:p2", Decimal(30)),
    ]


def test_credits_are_negative_lines_that_stop_at_zero() -> None:
    grant = CreditGrant("cr_1", "ten_a", Decimal(100), NOV.start, None, "welcome", Decimal(100))
    computed = compute_invoice(NOV, [_row(0)], [], [grant], BOOK)
    credit = [ln for ln in computed.lines if ln.kind is LineKind.CREDIT]
    assert [ln.amount_usd for ln in credit] == [Decimal("-0.4")]
    assert sum(ln.amount_usd for ln in computed.lines) == 0
    assert [a.amount_usd for a in computed.applications] == [Decimal("0.4")]


def test_a_price_change_gives_each_version_its_own_line() -> None:
    newer = TokenPrice(
        "m", BOOK.token_prices[0].adapter_class, Tier.STANDARD, Decimal(1), Decimal(1), Decimal(1),
        NOV.start + timedelta(hours=10), id=7,
    )  # fmt: skip
    book = PriceBook((*BOOK.token_prices, newer), BOOK.platform_fees)
    lines = usage_lines([_row(9), _row(10)], book)
    assert [(ln.reference, ln.amount_usd) for ln in lines] == [
        ("default", Decimal("0.4")),
        ("p7", Decimal(1)),
    ]
