"""The price book's lookups: most specific model pattern, latest version in effect."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tenantserve.billing.pricebook import (
    AdapterClass,
    NoPriceError,
    PlatformFee,
    PriceBook,
    TokenPrice,
    default_price_book,
    validate_model_pattern,
)
from tenantserve.errors import InvalidRequestError
from tenantserve.tiers import Tier

JAN = datetime(2026, 1, 1, tzinfo=UTC)
JUN = datetime(2026, 6, 1, tzinfo=UTC)


def _price(model: str, usd: str, at: datetime = JAN, adapter: bool = False) -> TokenPrice:
    cls = AdapterClass.ADAPTER if adapter else AdapterClass.BASE
    d = Decimal(usd)
    return TokenPrice(model, cls, Tier.STANDARD, d, d, d, at)


BOOK = PriceBook(
    (
        _price("*", "1"),
        _price("llama", "2"),
        _price("llama@3", "3"),
        _price("llama", "4", JUN),
        _price("*", "9", adapter=True),
    )
)


def _lookup(model: str, at: datetime, adapter: bool = False) -> Decimal:
    cls = AdapterClass.ADAPTER if adapter else AdapterClass.BASE
    return BOOK.token_price(model, cls, Tier.STANDARD, at).input_usd_per_mtok


def test_the_most_specific_pattern_wins() -> None:
    assert _lookup("llama@3", JAN) == 3
    assert _lookup("llama@2", JAN) == 2
    assert _lookup("qwen@1", JAN) == 1
    assert _lookup("llama@2", JAN, adapter=True) == 9


def test_the_version_in_effect_at_the_time_applies() -> None:
    assert _lookup("llama@2", datetime(2026, 5, 31, 23, tzinfo=UTC)) == 2
    assert _lookup("llama@2", JUN) == 4
    assert _lookup("llama@3", JUN) == 3  # name@version stays more specific than a newer name


def test_no_price_before_the_first_version_is_an_error() -> None:
    with pytest.raises(NoPriceError, match="price set"):
        BOOK.token_price("llama@2", AdapterClass.BASE, Tier.FREE, JAN)
    with pytest.raises(NoPriceError):
        BOOK.token_price(
            "llama@2", AdapterClass.BASE, Tier.STANDARD, datetime(2025, 1, 1, tzinfo=UTC)
        )


def test_platform_fee_changes_inside_a_span_are_listed() -> None:
    book = PriceBook(
        platform_fees=(
            PlatformFee(Tier.STANDARD, Decimal(10), JAN),
            PlatformFee(Tier.STANDARD, Decimal(20), JUN),
            PlatformFee(Tier.PREMIUM, Decimal(30), datetime(2026, 3, 1, tzinfo=UTC)),
        )
    )
    assert book.fee_changes(Tier.STANDARD, JAN, datetime(2026, 12, 1, tzinfo=UTC)) == [JUN]
    fee = book.platform_fee(Tier.STANDARD, JUN)
    assert fee is not None and fee.usd_per_month == 20
    assert book.platform_fee(Tier.FREE, JUN) is None


def test_the_default_book_prices_every_tier_and_adapter_class() -> None:
    book = default_price_book()
    for tier in Tier:
        for cls in AdapterClass:
            price = book.token_price("any@1", cls, tier, JAN)
            assert price.output_usd_per_mtok > price.input_usd_per_mtok > 0
    base = book.token_price("m", AdapterClass.BASE, Tier.STANDARD, JAN)
    adapter = book.token_price("m", AdapterClass.ADAPTER, Tier.STANDARD, JAN)
    assert adapter.input_usd_per_mtok == base.input_usd_per_mtok * Decimal("1.2")


@pytest.mark.parametrize("bad", ["", " ", "a b", "llama*", "@1", "a@b@c"])
def test_malformed_model_patterns_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        validate_model_pattern(bad)
