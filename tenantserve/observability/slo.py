"""Per-tenant SLOs, pure: targets per tier, SLIs over windows, error budgets, multi-window
burn-rate rules and alert episodes. No I/O (`slo_monitor.py` feeds it from the records).

Two SLIs per tenant, each a share of bad events with an allowed share (its budget):

    availability   bad = failed on our side (engine / upstream error, a 5xx refusal) among
                   eligible requests (client refusals — 4xx, 429 — are not counted);
                   allowed = 1 - target (premium 99.9%, standard 99.5%)
    ttft           bad = TTFT above the tier's target (premium 1 s, standard 2 s) among
                   requests with a first token; allowed = 5% (the target is a p95)

    burn rate (window)     = bad share in the window / allowed share (1.0: the budget
                             lasts exactly the budget window)
    budget remaining (30d) = 1 - bad share over 30 days / allowed share (< 0: overspent)

An alert rule fires when both its long and short windows burn faster than its threshold
(and the long window holds at least `min_requests`): `page` 1 h and 5 min at 14.4×
(2% of a 30-day budget in an hour), `ticket` 6 h and 30 min at 6×. Free tier: best
effort, values reported, no budget, no alerts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenantserve.tiers import Tier

TTFT_QUANTILE = 0.95
MAX_TTFT_SAMPLES = 5000  # the newest timed requests a window's percentiles are taken from
DAY_S = 86400.0
BUDGET_WINDOW_S = 30 * DAY_S
SLIS = ("availability", "ttft")


@dataclass(frozen=True)
class SloTarget:
    """A tier's objectives; None: best effort."""

    ttft_p95_s: float | None
    availability: float | None

    def allowed_bad_share(self, sli: str) -> float | None:
        """The share of bad events the SLI may have (its error budget), None: no target."""
        if sli == "availability":
            return None if self.availability is None else 1.0 - self.availability
        return None if self.ttft_p95_s is None else 1.0 - TTFT_QUANTILE


DEFAULT_TARGETS: Mapping[Tier, SloTarget] = {
    Tier.PREMIUM: SloTarget(ttft_p95_s=1.0, availability=0.999),
    Tier.STANDARD: SloTarget(ttft_p95_s=2.0, availability=0.995),
    Tier.FREE: SloTarget(ttft_p95_s=None, availability=None),
}


@dataclass(frozen=True)
class Window:
    name: str
    seconds: float


MIN_5 = Window("5m", 300.0)
MIN_30 = Window("30m", 1800.0)
HOUR_1 = Window("1h", 3600.0)
HOUR_6 = Window("6h", 21600.0)
DAYS_30 = Window("30d", BUDGET_WINDOW_S)


@dataclass(frozen=True)
class BurnRule:
    """Fires while both windows burn budget faster than `threshold`×."""

    name: str
    long: Window
    short: Window
    threshold: float
    min_requests: int = 10


DEFAULT_RULES = (
    BurnRule("page", HOUR_1, MIN_5, 14.4),
    BurnRule("ticket", HOUR_6, MIN_30, 6.0),
)


def windows_of(rules: Iterable[BurnRule]) -> list[Window]:
    """Every window the rules and the budget need, longest first."""
    seen = {DAYS_30.name: DAYS_30, HOUR_1.name: HOUR_1}
    for rule in rules:
        seen[rule.long.name] = rule.long
        seen[rule.short.name] = rule.short
    return sorted(seen.values(), key=lambda w: -w.seconds)


@dataclass(frozen=True)
class SliCounts:
    total: int = 0
    bad: int = 0

    def __add__(self, other: SliCounts) -> SliCounts:
        return SliCounts(self.total + other.total, self.bad + other.bad)

    @property
    def bad_share(self) -> float | None:
        return None if self.total == 0 else self.bad / self.total


def burn_rate(counts: SliCounts, allowed_bad_share: float) -> float | None:
    """How many times faster than sustainable the window spends the budget (None: no data)."""
    share = counts.bad_share
    return None if share is None else share / allowed_bad_share


def budget_remaining(counts: SliCounts, allowed_bad_share: float) -> float:
    """The share of the budget window's error budget left (1.0: untouched; < 0: overspent)."""
    share = counts.bad_share
    return 1.0 if share is None else 1.0 - share / allowed_bad_share


def quantile(values: Sequence[float], q: float = TTFT_QUANTILE) -> float | None:
    """The nearest-rank `q` quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Alert:
    tenant_id: str
    sli: str
    rule: str
    long_burn_rate: float
    short_burn_rate: float
    threshold: float


@dataclass(frozen=True)
class TtftQuantiles:
    """A tenant's TTFT percentiles (ms) over the last hour and day, from its newest
    `MAX_TTFT_SAMPLES` timed requests in each window; None where it had none."""

    p50_ms_1h: float | None = None
    p95_ms_1h: float | None = None
    p50_ms_24h: float | None = None
    p95_ms_24h: float | None = None
    samples_24h: int = 0

    @classmethod
    def of(cls, last_hour: Sequence[float], last_day: Sequence[float]) -> TtftQuantiles:
        """The percentiles of the two windows' samples."""
        return cls(
            quantile(last_hour, 0.5),
            quantile(last_hour),
            quantile(last_day, 0.5),
            quantile(last_day),
            len(last_day),
        )


@dataclass
class TenantSlo:
    """One tenant's SLO status: per SLI and window its counts, burn rates and budget."""

    tenant_id: str
    tier: Tier
    target: SloTarget
    # sli -> window name -> counts
    counts: dict[str, dict[str, SliCounts]]
    ttft_ms: TtftQuantiles | None = None  # when computed
    alerts: list[Alert] = field(default_factory=list)

    def burn_rates(self, sli: str) -> dict[str, float | None]:
        allowed = self.target.allowed_bad_share(sli)
        if allowed is None:
            return {}
        return {w: _round(burn_rate(c, allowed)) for w, c in self.counts[sli].items()}

    def to_json(self) -> dict[str, Any]:
        target = self.target
        month = {sli: self.counts[sli].get(DAYS_30.name, SliCounts()) for sli in SLIS}
        avail = month["availability"].bad_share
        q = self.ttft_ms or TtftQuantiles()
        out: dict[str, Any] = {
            "object": "slo",
            "tenant_id": self.tenant_id,
            "tier": self.tier.value,
            "best_effort": target.availability is None and target.ttft_p95_s is None,
            "ttft": {
                "target_p95_ms": None if target.ttft_p95_s is None else target.ttft_p95_s * 1000,
                "p50_ms_1h": _round(q.p50_ms_1h),
                "p95_ms_1h": _round(q.p95_ms_1h),
                "p50_ms_24h": _round(q.p50_ms_24h),
                "p95_ms_24h": _round(q.p95_ms_24h),
                "samples_24h": q.samples_24h,
                "requests_30d": month["ttft"].total,
                "slow_30d": month["ttft"].bad,
            },
            "availability": {
                "target": target.availability,
                "value_30d": None if avail is None else round(1.0 - avail, 6),
                "requests_30d": month["availability"].total,
                "failed_30d": month["availability"].bad,
            },
            "alerts": [
                {"sli": a.sli, "rule": a.rule, "burn_rate": round(a.long_burn_rate, 2)}
                for a in self.alerts
            ],
        }
        for sli in SLIS:
            allowed = target.allowed_bad_share(sli)
            budget = None if allowed is None else round(budget_remaining(month[sli], allowed), 4)
            out[sli]["error_budget_remaining"] = budget
            out[sli]["burn_rates"] = self.burn_rates(sli)
        return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def evaluate(
    tenant_id: str,
    tier: Tier,
    counts: dict[str, dict[str, SliCounts]],
    targets: Mapping[Tier, SloTarget] = DEFAULT_TARGETS,
    rules: Sequence[BurnRule] = DEFAULT_RULES,
    ttft_ms: TtftQuantiles | None = None,
) -> TenantSlo:
    """The tenant's SLO status from its per-window counts, with the rules firing now."""
    slo = TenantSlo(tenant_id, tier, targets[tier], counts, ttft_ms)
    for sli in SLIS:
        allowed = slo.target.allowed_bad_share(sli)
        if allowed is None:
            continue
        for rule in rules:
            long_c = counts[sli].get(rule.long.name, SliCounts())
            short_c = counts[sli].get(rule.short.name, SliCounts())
            long_rate, short_rate = burn_rate(long_c, allowed), burn_rate(short_c, allowed)
            if long_rate is None or short_rate is None or long_c.total < rule.min_requests:
                continue
            if long_rate >= rule.threshold and short_rate >= rule.threshold:
                slo.alerts.append(
                    Alert(tenant_id, sli, rule.name, long_rate, short_rate, rule.threshold)
                )
    return slo


class AlertEpisodes:
    """Which (tenant, sli, rule) alerts are firing: `update` returns the alerts that just
    started (an event each) and the keys that just stopped; one event per episode."""

    def __init__(self) -> None:
        self._active: dict[tuple[str, str, str], Alert] = {}

    def update(self, firing: Iterable[Alert]) -> tuple[list[Alert], list[Alert]]:
        """`firing`: every alert firing now, of every tenant. Returns (started, resolved)."""
        now = {(a.tenant_id, a.sli, a.rule): a for a in firing}
        started = [a for k, a in now.items() if k not in self._active]
        resolved = [a for k, a in self._active.items() if k not in now]
        for a in resolved:
            del self._active[(a.tenant_id, a.sli, a.rule)]
        self._active.update(now)
        return started, resolved

    def active(self, tenant_id: str | None = None) -> list[Alert]:
        return [a for a in self._active.values() if tenant_id in (None, a.tenant_id)]
