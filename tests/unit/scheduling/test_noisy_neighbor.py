"""NoisyNeighborDetector: token share plus the others' TTFT p95 against the baseline."""

from __future__ import annotations

import pytest

from tenantserve.errors import ConfigError
from tenantserve.scheduling.noisy_neighbor import (
    NoisyNeighborConfig,
    NoisyNeighborDetector,
    NoisyNeighborEvent,
    p95,
)

CFG = NoisyNeighborConfig(window_s=60, min_samples=10, cooldown_s=120)


def feed(
    d: NoisyNeighborDetector, now: float, tenant: str, n: int, tokens: int, ttft_s: float
) -> None:
    for _ in range(n):
        d.record(now, tenant, tokens, ttft_s)


def calm_detector() -> NoisyNeighborDetector:
    """Three tenants sharing evenly at TTFT 0.2 s, so the baseline p95 is 0.2 s."""
    d = NoisyNeighborDetector(CFG)
    for t in ("a", "b", "c"):
        feed(d, 0.0, t, 10, 100, 0.2)
    assert d.evaluate(1.0) == []
    assert d.baseline_ttft_p95_s == pytest.approx(0.2)
    return d


def test_p95_is_the_nearest_rank() -> None:
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    assert p95([3.0]) == 3.0


def test_dominant_tenant_that_slows_the_others_is_flagged_for_demotion() -> None:
    d = calm_detector()
    feed(d, 70.0, "hog", 30, 1_000, 0.3)
    feed(d, 70.0, "a", 10, 50, 0.5)
    feed(d, 70.0, "b", 10, 50, 0.4)
    (event,) = d.evaluate(75.0)  # the calm samples have left the window
    assert isinstance(event, NoisyNeighborEvent)
    assert (event.tenant_id, event.action, event.at) == ("hog", "demote", 75.0)
    assert event.share == pytest.approx(30_000 / 31_000)
    assert event.others_ttft_p95_ratio == pytest.approx(0.5 / 0.2)


def test_dominant_tenant_is_not_flagged_while_the_others_are_fine() -> None:
    d = calm_detector()
    feed(d, 70.0, "big", 30, 1_000, 0.2)
    feed(d, 70.0, "a", 20, 50, 0.25)  # 1.25x the baseline: below 1.5x
    assert d.evaluate(75.0) == []


def test_slow_pool_without_a_dominant_tenant_flags_nobody() -> None:
    d = calm_detector()
    for t in ("a", "b", "c"):
        feed(d, 70.0, t, 10, 100, 2.0)
    assert d.evaluate(75.0) == []


def test_too_few_samples_of_the_others_flag_nobody() -> None:
    d = calm_detector()
    feed(d, 70.0, "hog", 30, 1_000, 0.3)
    feed(d, 70.0, "a", 5, 50, 5.0)
    assert d.evaluate(75.0) == []


def test_no_baseline_means_no_verdict() -> None:
    d = NoisyNeighborDetector(CFG)  # never seen a calm window, no seed
    feed(d, 0.0, "hog", 30, 1_000, 0.3)
    feed(d, 0.0, "a", 20, 50, 5.0)
    assert d.evaluate(1.0) == []


def test_seeded_baseline_allows_a_verdict_at_once() -> None:
    d = NoisyNeighborDetector(NoisyNeighborConfig(min_samples=10, baseline_ttft_p95_s=0.1))
    feed(d, 0.0, "hog", 30, 1_000, 0.3)
    feed(d, 0.0, "a", 20, 50, 0.2)
    assert [e.tenant_id for e in d.evaluate(1.0)] == ["hog"]


def test_flagged_tenant_is_not_flagged_again_until_the_cooldown_ends() -> None:
    d = calm_detector()
    feed(d, 70.0, "hog", 30, 1_000, 0.3)
    feed(d, 70.0, "a", 20, 50, 0.5)
    assert len(d.evaluate(75.0)) == 1
    feed(d, 80.0, "hog", 30, 1_000, 0.3)
    feed(d, 80.0, "a", 20, 50, 0.5)
    assert d.evaluate(90.0) == []
    feed(d, 196.0, "hog", 30, 1_000, 0.3)
    feed(d, 196.0, "a", 20, 50, 0.5)
    assert [e.tenant_id for e in d.evaluate(196.0)] == ["hog"]


def test_baseline_follows_calm_windows_slowly() -> None:
    d = calm_detector()
    for t in ("a", "b", "c"):
        feed(d, 100.0, t, 10, 100, 0.4)
    d.evaluate(101.0)
    assert d.baseline_ttft_p95_s == pytest.approx(0.9 * 0.2 + 0.1 * 0.4)


def test_invalid_thresholds_are_rejected() -> None:
    with pytest.raises(ConfigError):
        NoisyNeighborConfig(share_threshold=1.5)
    with pytest.raises(ConfigError):
        NoisyNeighborConfig(ttft_ratio_threshold=0.9)
