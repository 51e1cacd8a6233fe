"""Per-tenant quotas over UTC calendar periods, and the pure check a request passes.

A `Quota` caps one metric (requests, tokens, prompt tokens or completion tokens) over
one period (a UTC day or month). `check_quotas` compares a request with what the tenant
has already used this period (the `QuotaLedger` knows that) and answers:

    hard quota already reached, or the prompt no longer fits  -> QuotaExceeded (429,
                                                                 Retry-After: period end)
    hard token quota the output would cross                   -> max_tokens clamped to
                                                                 what is left
    soft quota the request would cross                        -> max_tokens clamped (never
                                                                 under SOFT_FLOOR_TOKENS),
                                                                 a SoftQuotaAlert
    usage at a quota's alert shares (80%, 100% by default)   -> a ThresholdAlert (the
                                                                 gateway raises an
                                                                 operator event once per
                                                                 share and period)

Usage is known only after a request completes, so token quotas are checked against
the prompt (known) plus `max_tokens` (an upper bound on the output): a hard token quota
denies only once not even one output token fits after the prompt, and otherwise lets
the request run with `max_tokens` clamped to what is left, so a request alone never
takes the tenant past a hard limit. Requests running at the same time all see the same
`used`, so together they can overshoot by what they have in flight; the rate limiter's
tokens/minute and concurrency limits bound that.

Pure: no I/O, no clock (the caller passes `now`, a timezone-aware datetime).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from tenantserve.errors import InvalidRequestError

# A soft quota never clamps an output below this many tokens (a reply still makes sense).
SOFT_FLOOR_TOKENS = 16
# The shares of a quota whose crossing raises an operator alert (once per period each),
# unless the quota names its own (`alert_at`).
DEFAULT_ALERT_AT: tuple[float, ...] = (0.8, 1.0)


class QuotaMetric(StrEnum):
    """What a quota counts; `tokens` is prompt + completion tokens."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    PROMPT_TOKENS = "prompt_tokens"
    COMPLETION_TOKENS = "completion_tokens"


class QuotaPeriod(StrEnum):
    """A UTC calendar period; usage starts from zero when the next one begins."""

    DAY = "day"
    MONTH = "month"


class Enforcement(StrEnum):
    """Hard: refuse what would exceed the quota. Soft: clamp the output and alert."""

    HARD = "hard"
    SOFT = "soft"


# The amount a tenant has used in the current period, per (period, metric); a missing
# entry is zero.
UsageKey = tuple[QuotaPeriod, QuotaMetric]
QuotaUsage = Mapping[UsageKey, int]

_E = TypeVar("_E", bound=StrEnum)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("quota periods need a timezone-aware datetime, not a naive one")
    return now.astimezone(UTC)


def period_key(period: QuotaPeriod, now: datetime) -> str:
    """The UTC period `now` falls in: `2026-11` for a month, `2026-11-27` for a day."""
    now = _utc(now)
    if period is QuotaPeriod.MONTH:
        return f"{now.year:04d}-{now.month:02d}"
    return f"{now.year:04d}-{now.month:02d}-{now.day:02d}"


def period_end(period: QuotaPeriod, now: datetime) -> datetime:
    """The UTC instant the period containing `now` ends (the next one's first instant)."""
    now = _utc(now)
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is QuotaPeriod.DAY:
        return start_of_day + timedelta(days=1)
    days_in_month = calendar.monthrange(now.year, now.month)[1]
    return start_of_day.replace(day=1) + timedelta(days=days_in_month)


def seconds_until_period_end(period: QuotaPeriod, now: datetime) -> float:
    """Seconds from `now` until the period resets (what Retry-After says); always > 0."""
    return (period_end(period, now) - _utc(now)).total_seconds()


_QUOTA_KEYS = ("metric", "period", "limit", "enforcement")
_OPTIONAL_KEYS = ("alert_at",)


def _choice(enum: type[_E], name: str, value: object) -> _E:
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    choices = ", ".join(e.value for e in enum)
    raise InvalidRequestError(f"quota {name} must be one of {choices}, not {value!r}")


@dataclass(frozen=True)
class Quota:
    """At most `limit` of `metric` per UTC `period`, enforced hard or soft."""

    metric: QuotaMetric
    period: QuotaPeriod
    limit: int
    enforcement: Enforcement
    # Shares of `limit` (0 < x <= 1, ascending) at which operators are alerted.
    alert_at: tuple[float, ...] = DEFAULT_ALERT_AT

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit <= 0:
            raise InvalidRequestError(f"quota limit must be a positive integer, not {self.limit!r}")
        shares = self.alert_at
        valid = isinstance(shares, tuple) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1 for x in shares
        )
        if not valid or list(shares) != sorted(set(shares)) or len(shares) > 10:
            raise InvalidRequestError(
                "quota alert_at must be a list of up to 10 ascending shares in (0, 1], "
                f"such as [0.8, 1.0], not {shares!r}"
            )

    @property
    def usage_key(self) -> UsageKey:
        return (self.period, self.metric)

    def to_dict(self) -> dict[str, object]:
        """`{"metric", "period", "limit", "enforcement"[, "alert_at"]}`, JSON-ready
        (`alert_at` only when it is not the default)."""
        out: dict[str, object] = {
            "metric": self.metric.value,
            "period": self.period.value,
            "limit": self.limit,
            "enforcement": self.enforcement.value,
        }
        if self.alert_at != DEFAULT_ALERT_AT:
            out["alert_at"] = list(self.alert_at)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Quota:
        """Parse one quota; unknown or missing keys and unknown values are refused with
        InvalidRequestError naming the choices."""
        if not isinstance(data, Mapping):
            raise InvalidRequestError(
                f"a quota must be an object with {', '.join(_QUOTA_KEYS)}, not {data!r}"
            )
        known = (*_QUOTA_KEYS, *_OPTIONAL_KEYS)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidRequestError(
                f"unknown quota field(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        missing = [k for k in _QUOTA_KEYS if k not in data]
        if missing:
            raise InvalidRequestError(
                f"quota is missing {', '.join(missing)}; a quota has {', '.join(_QUOTA_KEYS)}"
            )
        return cls(
            metric=_choice(QuotaMetric, "metric", data["metric"]),
            period=_choice(QuotaPeriod, "period", data["period"]),
            limit=data["limit"],  # type: ignore[arg-type]  # checked in __post_init__
            enforcement=_choice(Enforcement, "enforcement", data["enforcement"]),
            alert_at=_shares(data.get("alert_at", DEFAULT_ALERT_AT)),
        )


def _shares(value: object) -> tuple[float, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise InvalidRequestError(f"quota alert_at must be a list of shares, not {value!r}")


def parse_quotas(items: Iterable[Mapping[str, object]]) -> tuple[Quota, ...]:
    """A tenant's quota list, in the given order; at most one per (metric, period), else
    InvalidRequestError."""
    if isinstance(items, (str, bytes, Mapping)):
        raise InvalidRequestError("quotas must be a list of quota objects")
    quotas = tuple(Quota.from_dict(item) for item in items)
    seen: set[UsageKey] = set()
    for q in quotas:
        if q.usage_key in seen:
            raise InvalidRequestError(
                f"more than one quota for {q.metric.value} per {q.period.value}; "
                "keep one per (metric, period)"
            )
        seen.add(q.usage_key)
    return quotas


@dataclass(frozen=True)
class SoftQuotaAlert:
    """A soft quota this request crosses (or that was already crossed this period)."""

    quota: Quota
    # Used this period before the request.
    used: int
    period_key: str


@dataclass(frozen=True)
class QuotaAllowed:
    """The request may run with `max_tokens` (never above what it asked for)."""

    max_tokens: int
    alerts: tuple[SoftQuotaAlert, ...] = ()


@dataclass(frozen=True)
class QuotaExceeded:
    """A hard quota refuses the request until its period ends in `retry_after_s`."""

    quota: Quota
    # Used this period before the request.
    used: int
    retry_after_s: float

    @property
    def message(self) -> str:
        """What the 429 says to the client."""
        q = self.quota
        return (
            f"Quota exceeded: {q.limit} {q.metric.value.replace('_', ' ')} per {q.period.value} "
            f"(used {self.used}); it resets at the start of the next UTC {q.period.value}."
        )


def output_room(quota: Quota, used: int, prompt_tokens: int) -> int | None:
    """How many output tokens still fit under `quota` after this prompt (may be <= 0), or
    None when output does not count against it (requests, prompt_tokens)."""
    if quota.metric is QuotaMetric.TOKENS:
        return quota.limit - used - prompt_tokens
    if quota.metric is QuotaMetric.COMPLETION_TOKENS:
        return quota.limit - used
    return None


def _hard_refuses(quota: Quota, used: int, prompt_tokens: int) -> bool:
    """Whether a hard quota refuses the request outright (before any clamping)."""
    if quota.metric is QuotaMetric.REQUESTS:
        return used + 1 > quota.limit
    if quota.metric is QuotaMetric.PROMPT_TOKENS:
        return used + prompt_tokens > quota.limit
    room = output_room(quota, used, prompt_tokens)
    assert room is not None
    return room < 1


def _crosses(quota: Quota, used: int, prompt_tokens: int, max_tokens: int) -> bool:
    """Whether running the request with `max_tokens` could take usage past the quota."""
    if quota.metric is QuotaMetric.REQUESTS:
        return used + 1 > quota.limit
    if quota.metric is QuotaMetric.PROMPT_TOKENS:
        return used + prompt_tokens > quota.limit
    room = output_room(quota, used, prompt_tokens)
    assert room is not None
    return max_tokens > room


def check_quotas(
    quotas: Sequence[Quota],
    used: QuotaUsage,
    prompt_tokens: int,
    max_tokens: int,
    now: datetime,
) -> QuotaAllowed | QuotaExceeded:
    """The request against every quota; the strictest answer wins.

    Hard quotas first: any refusal is the answer (the one that resets last, since all
    must pass); otherwise `max_tokens` is clamped to the smallest output room of the
    hard token quotas. Soft quotas then see the hard-clamped request: each one it would
    still cross clamps `max_tokens` to its room, but not below SOFT_FLOOR_TOKENS, and
    adds an alert. A soft requests or prompt_tokens quota can only alert (output does
    not count against it). Does not record anything.
    """
    if prompt_tokens < 0 or max_tokens < 1:
        raise ValueError(
            f"need prompt_tokens >= 0 and max_tokens >= 1, not {prompt_tokens}, {max_tokens}"
        )
    hard = [q for q in quotas if q.enforcement is Enforcement.HARD]
    soft = [q for q in quotas if q.enforcement is Enforcement.SOFT]

    refusals = [
        QuotaExceeded(q, used.get(q.usage_key, 0), seconds_until_period_end(q.period, now))
        for q in hard
        if _hard_refuses(q, used.get(q.usage_key, 0), prompt_tokens)
    ]
    if refusals:
        return max(refusals, key=lambda r: r.retry_after_s)

    allowed = max_tokens
    for q in hard:
        room = output_room(q, used.get(q.usage_key, 0), prompt_tokens)
        if room is not None:
            allowed = min(allowed, room)

    alerts: list[SoftQuotaAlert] = []
    clamped = allowed
    for q in soft:
        q_used = used.get(q.usage_key, 0)
        if not _crosses(q, q_used, prompt_tokens, allowed):
            continue
        alerts.append(SoftQuotaAlert(q, q_used, period_key(q.period, now)))
        room = output_room(q, q_used, prompt_tokens)
        if room is not None:
            clamped = min(clamped, max(room, SOFT_FLOOR_TOKENS))
    return QuotaAllowed(max_tokens=clamped, alerts=tuple(alerts))


@dataclass(frozen=True)
class ThresholdAlert:
    """A quota's usage has reached `share` of its limit this period."""

    quota: Quota
    share: float
    used: int
    period_key: str


def threshold_alerts(
    quotas: Sequence[Quota], used: QuotaUsage, now: datetime
) -> list[ThresholdAlert]:
    """The highest alert share each quota's usage has reached (at most one per quota)."""
    out = []
    for q in quotas:
        q_used = used.get(q.usage_key, 0)
        reached = [x for x in q.alert_at if q_used >= x * q.limit]
        if reached:
            out.append(ThresholdAlert(q, reached[-1], q_used, period_key(q.period, now)))
    return out


class SoftAlertFilter:
    """Lets through the first alert per (tenant, metric, period) in each period, so an
    over-quota tenant raises one operator event per period, not one per request.

    In-process: each gateway process alerts once. Memory: one entry per tenant's soft
    quota.
    """

    def __init__(self) -> None:
        self._alerted: dict[tuple[str, UsageKey, float | None], str] = {}

    def first_time(self, tenant_id: str, alert: SoftQuotaAlert | ThresholdAlert) -> bool:
        """True the first time this alert's quota fires for the tenant in its period (a
        threshold alert: the first time at that share)."""
        share = alert.share if isinstance(alert, ThresholdAlert) else None
        key = (tenant_id, alert.quota.usage_key, share)
        if self._alerted.get(key) == alert.period_key:
            return False
        self._alerted[key] = alert.period_key
        return True
