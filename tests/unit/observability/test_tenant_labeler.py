"""The `tenant` label: premium always, the top K by recent traffic, the rest `other`;
the label set (and the registry's series) stays bounded whatever the tenant ids."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from tenantserve.observability.metrics import OTHER, GatewayMetrics, TenantLabeler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _finish(metrics: GatewayMetrics, tenant: str, premium: bool = False) -> None:
    metrics.finished(tenant, premium, "m", "completed", 10, 5, 2, 0.1, 0.5, 0.01)


def _tenant_labels(registry: CollectorRegistry) -> set[str]:
    return {
        s.labels["tenant"]
        for family in registry.collect()
        for s in family.samples
        if "tenant" in s.labels
    }


def test_the_first_k_tenants_take_the_free_seats_and_the_rest_are_other() -> None:
    labeler = TenantLabeler(top_k=2, clock=Clock())
    assert [labeler.label(t, False) for t in ("a", "b", "c", "a", "c")] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
    ]


def test_the_ranking_at_the_window_end_keeps_the_top_k_by_recent_requests() -> None:
    clock = Clock()
    demoted: list[str] = []
    labeler = TenantLabeler(top_k=2, window_s=60, clock=clock, on_demote=demoted.append)
    for tenant, n in (("quiet", 1), ("busy", 50), ("busier", 80)):
        for _ in range(n):
            labeler.label(tenant, False)
    assert labeler.labeled == {"quiet", "busy"}  # seats went by arrival
    clock.now = 61
    assert labeler.label("busier", False) == "busier"  # re-ranked: busier and busy
    assert labeler.labeled == {"busy", "busier"}
    assert demoted == ["quiet"]
    assert labeler.label("quiet", False) == OTHER


def test_recent_traffic_outranks_old_traffic() -> None:
    clock = Clock()
    labeler = TenantLabeler(top_k=1, window_s=60, clock=clock)
    for _ in range(100):
        labeler.label("old", False)
    for window in range(1, 8):  # "old" goes quiet; "new" sends 30 a window
        clock.now = 60 * window + 1
        for _ in range(30):
            labeler.label("new", False)
    clock.now = 60 * 8 + 1
    assert labeler.label("new", False) == "new"


def test_premium_tenants_are_always_labeled_and_take_no_seat() -> None:
    labeler = TenantLabeler(top_k=1, clock=Clock())
    assert labeler.label("p1", True) == "p1"
    assert labeler.label("free", False) == "free"
    assert labeler.label("p2", True) == "p2"
    assert labeler.label("other-free", False) == OTHER


def test_top_k_zero_folds_every_non_premium_tenant() -> None:
    labeler = TenantLabeler(top_k=0, clock=Clock())
    assert {labeler.label(t, False) for t in ("a", "b")} == {OTHER}


def test_label_sets_stay_bounded_under_10k_random_tenants() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, TenantLabeler(top_k=5, window_s=60, clock=clock))
    rng = random.Random(7)
    premium = [f"prem-{i}" for i in range(3)]
    for i in range(10_000):
        clock.now = i * 0.05  # windows roll while traffic flows
        _finish(metrics, f"ten_{rng.getrandbits(64):016x}")
        if i % 100 == 0:
            _finish(metrics, premium[i % 3], premium=True)
            metrics.rejected(f"ten_{rng.getrandbits(64):016x}", False, "m", "rate_limited")
    labels = _tenant_labels(registry)
    assert set(premium) <= labels
    assert OTHER in labels
    assert len(labels) <= 5 + len(premium) + 1


def test_a_demoted_tenants_series_leave_the_exposition() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, TenantLabeler(top_k=1, window_s=60, clock=clock))
    _finish(metrics, "early")
    metrics.rejected("early", False, "m", "shed")
    for _ in range(10):
        _finish(metrics, "heavy")
    clock.now = 61
    _finish(metrics, "heavy")
    assert _tenant_labels(registry) == {"heavy", OTHER}
    assert b'tenant="early"' not in generate_latest(registry)


def test_finished_and_rejected_move_the_per_tenant_series() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, TenantLabeler(top_k=3))
    _finish(metrics, "acme")
    metrics.rejected("acme", False, "m", "quota_exceeded")

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"tenant": "acme", "model": "m", **labels})

    assert value("tenantserve_requests_total", status="completed") == 1
    assert value("tenantserve_requests_total", status="rejected") == 1
    assert value("tenantserve_rejections_total", reason="quota_exceeded") == 1
    assert value("tenantserve_input_tokens_total") == 10
    assert value("tenantserve_output_tokens_total") == 5
    assert value("tenantserve_cached_input_tokens_total") == 2
    assert value("tenantserve_time_to_first_token_seconds_count") == 1
    assert value("tenantserve_request_duration_seconds_sum") == 0.5
    assert value("tenantserve_queue_wait_seconds_bucket", le="0.05") == 1
