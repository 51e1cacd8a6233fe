"""Money parsing and rounding: Decimal only, micro-dollars, floats refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tenantserve.billing.money import cents, parse_usd, round_usd, usd_str
from tenantserve.errors import InvalidRequestError


def test_decimal_strings_and_integers_parse_exactly() -> None:
    assert parse_usd("0.1") + parse_usd("0.2") == Decimal("0.3")
    assert parse_usd(49) == Decimal(49)


@pytest.mark.parametrize("bad", [0.1, True, "abc", "NaN", "Infinity", "-1", "0.0000001", None])
def test_floats_and_malformed_amounts_are_refused(bad: object) -> None:
    with pytest.raises(InvalidRequestError):
        parse_usd(bad)


def test_rounding_is_half_even_to_the_micro_dollar() -> None:
    assert round_usd(Decimal("0.0000005")) == Decimal("0.000000")
    assert round_usd(Decimal("0.0000015")) == Decimal("0.000002")
    assert usd_str(Decimal("49")) == "49.000000"


def test_cents_are_written_without_an_exponent() -> None:
    assert str(cents(Decimal("49"))) == "4900"
    assert str(cents(Decimal("-10"))) == "-1000"
    assert str(cents(Decimal("0.000001"))) == "0.0001"
