"""Credits: soonest-expiring first, only unexpired at period end, never below zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tenantserve.billing.credits import CreditGrant, apply_credits
from tenantserve.billing.period import BillingPeriod

NOV = BillingPeriod(2026, 11)
GRANTED = datetime(2026, 10, 1, tzinfo=UTC)


def _grant(
    gid: str, remaining: str, expires: datetime | None, granted: datetime = GRANTED
) -> CreditGrant:
    amount = Decimal(remaining)
    return CreditGrant(gid, "ten_a", amount, granted, expires, "r", amount)


def test_soonest_expiring_grants_are_drawn_first_and_never_expiring_last() -> None:
    grants = [
        _grant("never", "100", None),
        _grant("later", "5", NOV.end + timedelta(days=30)),
        _grant("soon", "5", NOV.end),
    ]
    drawn = apply_credits(grants, Decimal(12), NOV)
    assert [(a.grant_id, a.amount_usd) for a in drawn] == [
        ("soon", 5),
        ("later", 5),
        ("never", 2),
    ]


def test_the_total_never_goes_below_zero() -> None:
    drawn = apply_credits([_grant("big", "100", None)], Decimal("3.5"), NOV)
    assert [a.amount_usd for a in drawn] == [Decimal("3.5")]
    assert apply_credits([_grant("big", "100", None)], Decimal(0), NOV) == []


def test_grants_expired_by_the_period_end_or_made_after_it_are_not_drawn() -> None:
    grants = [
        _grant("expired", "10", NOV.end - timedelta(seconds=1)),
        _grant("future", "10", None, granted=NOV.end),
        _grant("empty", "0", None),
    ]
    assert apply_credits(grants, Decimal(5), NOV) == []


def test_equal_expiries_draw_the_oldest_grant_first() -> None:
    grants = [
        _grant("newer", "5", None, granted=GRANTED + timedelta(days=1)),
        _grant("older", "5", None),
    ]
    assert [a.grant_id for a in apply_credits(grants, Decimal(6), NOV)] == ["older", "newer"]
