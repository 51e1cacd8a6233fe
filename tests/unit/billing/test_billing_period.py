"""Billing periods and the END-time rule at the month boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tenantserve.billing.period import BillingPeriod
from tenantserve.errors import InvalidRequestError

DEC = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_request_ending_just_before_midnight_is_billed_in_the_month_it_ends() -> None:
    nov, dec = BillingPeriod(2026, 11), BillingPeriod(2026, 12)
    assert nov.contains(DEC - timedelta(milliseconds=100))
    assert not nov.contains(DEC)
    assert dec.contains(DEC + timedelta(milliseconds=100))
    assert BillingPeriod.containing(DEC - timedelta(milliseconds=100)) == nov
    assert BillingPeriod.containing(DEC) == dec


def test_december_ends_at_the_new_year() -> None:
    p = BillingPeriod.parse("2026-12")
    assert (p.start, p.end) == (DEC, datetime(2027, 1, 1, tzinfo=UTC))
    assert p.seconds == 31 * 86_400
    assert str(p) == "2026-12"


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "26-11", "2026/11", "", "1999-01"])
def test_malformed_periods_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequestError, match="YYYY-MM"):
        BillingPeriod.parse(bad)
