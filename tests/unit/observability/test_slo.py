"""SLO math: burn rates, error budgets, the p95, multi-window alerts and their episodes."""

from __future__ import annotations

import pytest

from tenantserve.observability.slo import (
    DEFAULT_TARGETS,
    AlertEpisodes,
    SliCounts,
    budget_remaining,
    burn_rate,
    evaluate,
    quantile,
)
from tenantserve.tiers import Tier


def counts(**windows: tuple[int, int]) -> dict[str, SliCounts]:
    return {name.removeprefix("w"): SliCounts(*tb) for name, tb in windows.items()}


def by_sli(availability: dict[str, SliCounts], ttft: dict[str, SliCounts] | None = None):
    return {"availability": availability, "ttft": ttft or {}}


def test_burn_rate_is_the_bad_share_over_the_allowed_share() -> None:
    # 1% failed against a 0.5% budget burns twice as fast as sustainable.
    assert burn_rate(SliCounts(1000, 10), 0.005) == pytest.approx(2.0)
    assert burn_rate(SliCounts(0, 0), 0.005) is None


def test_error_budget_remaining_goes_negative_when_overspent() -> None:
    assert budget_remaining(SliCounts(10_000, 0), 0.001) == 1.0
    assert budget_remaining(SliCounts(10_000, 5), 0.001) == pytest.approx(0.5)
    assert budget_remaining(SliCounts(10_000, 20), 0.001) == pytest.approx(-1.0)
    assert budget_remaining(SliCounts(), 0.001) == 1.0


def test_p95_is_the_nearest_rank() -> None:
    assert quantile(list(range(1, 101))) == 95
    assert quantile([5.0]) == 5.0
    assert quantile([]) is None


def test_tier_targets_follow_the_design() -> None:
    premium, standard = DEFAULT_TARGETS[Tier.PREMIUM], DEFAULT_TARGETS[Tier.STANDARD]
    assert (premium.ttft_p95_s, premium.availability) == (1.0, 0.999)
    assert (standard.ttft_p95_s, standard.availability) == (2.0, 0.995)
    assert DEFAULT_TARGETS[Tier.FREE].allowed_bad_share("availability") is None


def test_page_fires_only_when_both_the_hour_and_five_minutes_burn_fast() -> None:
    # Premium: 0.1% allowed; 2% failed = 20x burn in both windows.
    hot = counts(w1h=(1000, 20), w5m=(100, 2), w30d=(1000, 20))
    slo = evaluate("ten_a", Tier.PREMIUM, by_sli(hot))
    assert [(a.sli, a.rule) for a in slo.alerts] == [("availability", "page")]
    # The last five minutes are clean: it has recovered, no page.
    recovered = counts(w1h=(1000, 20), w5m=(100, 0), w30d=(1000, 20))
    assert evaluate("ten_a", Tier.PREMIUM, by_sli(recovered)).alerts == []


def test_slow_rule_fires_at_six_times_over_six_hours() -> None:
    # Standard: 0.5% allowed; 4% failed = 8x: the ticket rule, not the page.
    c = counts(w6h=(1000, 40), w30m=(200, 8), w1h=(300, 12), w5m=(50, 2), w30d=(1000, 40))
    slo = evaluate("ten_a", Tier.STANDARD, by_sli(c))
    assert [(a.sli, a.rule) for a in slo.alerts] == [("availability", "ticket")]


def test_slow_first_tokens_burn_the_ttft_budget() -> None:
    # 5% of requests may be slower than the target; 80% slow is a 16x burn.
    ttft = counts(w1h=(100, 80), w5m=(20, 16), w30d=(100, 80))
    slo = evaluate("ten_a", Tier.STANDARD, by_sli(counts(w1h=(100, 0)), ttft))
    assert [(a.sli, a.rule) for a in slo.alerts] == [("ttft", "page")]
    body = slo.to_json()
    assert body["ttft"]["error_budget_remaining"] == pytest.approx(1 - 0.8 / 0.05)
    assert body["availability"]["value_30d"] is None  # no 30-day availability data given


def test_a_handful_of_requests_never_pages() -> None:
    tiny = counts(w1h=(3, 3), w5m=(3, 3), w30d=(3, 3))
    assert evaluate("ten_a", Tier.PREMIUM, by_sli(tiny)).alerts == []


def test_free_tier_is_best_effort_without_alerts_or_budget() -> None:
    hot = counts(w1h=(1000, 900), w5m=(100, 90), w30d=(1000, 900))
    slo = evaluate("ten_a", Tier.FREE, by_sli(hot, hot))
    assert slo.alerts == []
    body = slo.to_json()
    assert body["best_effort"] is True
    assert body["availability"]["error_budget_remaining"] is None
    assert body["availability"]["value_30d"] == pytest.approx(0.1)


def test_an_alert_episode_yields_one_start_and_one_resolution() -> None:
    episodes = AlertEpisodes()
    hot = evaluate(
        "ten_a", Tier.PREMIUM, by_sli(counts(w1h=(1000, 20), w5m=(100, 2), w30d=(1000, 20)))
    )
    started, resolved = episodes.update(hot.alerts)
    assert len(started) == 1 and resolved == []
    for _ in range(3):  # still burning: no new event
        assert episodes.update(hot.alerts) == ([], [])
    assert episodes.active("ten_a") == hot.alerts
    started, resolved = episodes.update([])
    assert started == [] and [(a.tenant_id, a.rule) for a in resolved] == [("ten_a", "page")]
    started, _ = episodes.update(hot.alerts)  # a new episode: a new event
    assert len(started) == 1
