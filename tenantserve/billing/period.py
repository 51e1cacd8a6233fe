"""`BillingPeriod`: a UTC calendar month, "YYYY-MM".

The billing rule (`metering/events.py`): a request is billed in the period containing
its END time; [start, end) is half-open, so a request ending 23:59:59.9 on the last day
is billed in that month and one ending 00:00:00.1 on the 1st in the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from tenantserve.errors import InvalidRequestError

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class BillingPeriod:
    """One UTC month; `str(p)` is "YYYY-MM"."""

    year: int
    month: int

    @classmethod
    def parse(cls, value: str) -> BillingPeriod:
        """ "2026-11" -> BillingPeriod(2026, 11); InvalidRequestError otherwise."""
        match = _PERIOD.match(value.strip()) if isinstance(value, str) else None
        if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
            raise InvalidRequestError(f"period must be YYYY-MM (e.g. 2026-11), not {value!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def containing(cls, t: datetime) -> BillingPeriod:
        """The period a request ending at `t` is billed in."""
        t = t.astimezone(UTC)
        return cls(t.year, t.month)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The start of the next month (exclusive)."""
        if self.month == 12:
            return datetime(self.year + 1, 1, 1, tzinfo=UTC)
        return datetime(self.year, self.month + 1, 1, tzinfo=UTC)

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    def contains(self, t: datetime) -> bool:
        """Whether a request that ended at `t` is billed in this period."""
        return self.start <= t < self.end

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
