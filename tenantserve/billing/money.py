"""Money: `Decimal` US dollars, never float.

Amounts are kept to the micro-dollar (`MICRO`, 6 places): a line's amount is its exact
price rounded half-even once, at the end; sums of amounts are exact. The payment
provider rounds an invoice's total to cents when it charges it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from tenantserve.errors import InvalidRequestError

MICRO = Decimal("0.000001")
ZERO = Decimal(0)
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)  # prices are per million tokens
MAX_USD = Decimal("1e12")


def round_usd(value: Decimal) -> Decimal:
    """`value` rounded half-even to the micro-dollar."""
    return value.quantize(MICRO, rounding=ROUND_HALF_EVEN)


def parse_usd(value: object, name: str = "amount") -> Decimal:
    """A non-negative dollar amount from a Decimal, int or decimal string (never a float:
    "0.1" is exact, 0.1 is not); at most 6 decimal places. InvalidRequestError otherwise."""
    if isinstance(value, (bool, float)):
        raise InvalidRequestError(f'{name} must be a decimal string such as "12.50", not a float')
    try:
        amount = Decimal(value) if isinstance(value, int | str | Decimal) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise InvalidRequestError(f'{name} must be a decimal amount such as "12.50", not {value!r}')
    if amount < 0 or amount > MAX_USD:
        raise InvalidRequestError(f"{name} must be between 0 and {MAX_USD:,.0f}, not {value!r}")
    if amount != amount.quantize(MICRO, rounding=ROUND_HALF_EVEN):
        raise InvalidRequestError(f"{name} has more than 6 decimal places: {value!r}")
    return round_usd(amount)


def usd_str(value: Decimal) -> str:
    """The amount as the JSON and CSV exports write it: a plain decimal string, 6 places."""
    return f"{round_usd(value):f}"


def cents(value: Decimal) -> Decimal:
    """Dollars as decimal cents, the unit of the payment provider's amounts, written
    without an exponent or trailing zeros ("4900", "123.4567")."""
    amount = value * 100
    if amount == amount.to_integral_value():
        return amount.quantize(Decimal(1))
    return amount.normalize()
