"""The gateway's Prometheus metrics, per tenant and model, with bounded cardinality.

    TenantLabeler    the `tenant` label: the tenant's id for premium tenants and the top K
                     tenants by recent requests, `other` for everyone else
    GatewayMetrics   the per-request counters and histograms; `finished` / `rejected` are
                     the only writers (a few microseconds each: label children are
                     created once per (tenant label, model), never per request)

No label carries a request id, a prompt or any other client string: `model` is the
catalog / registry name a request resolved to (`unknown` for a name that resolved to
nothing), `status` and `reason` are closed sets.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from operator import itemgetter

from prometheus_client import CollectorRegistry, Counter, Histogram

OTHER = "other"
DEFAULT_WINDOW_S = 60.0

TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
QUEUE_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0)


class TenantLabeler:
    """The `tenant` label of a request; at most K + premium tenants + 1 values at a time.

    Premium tenants always get their own label. Of the others, the top K by requests
    (counts halved every `window_s`, so "recent" has a half-life of one window) do; a
    free seat is taken at once by the next tenant seen, the ranking is redone at every
    window's end, and tenants that drop out are handed to `on_demote` (their series are
    removed)."""

    def __init__(
        self,
        top_k: int,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        on_demote: Callable[[str], None] | None = None,
    ) -> None:
        self.top_k = top_k
        self.window_s = window_s
        self.on_demote = on_demote
        self._clock = clock
        self._counts: dict[str, float] = {}
        self._top: set[str] = set()
        self._next_rank_at = clock() + window_s

    def label(self, tenant_id: str, premium: bool) -> str:
        """The label for one request of `tenant_id` (and count the request)."""
        if premium:
            return tenant_id
        counts = self._counts
        counts[tenant_id] = counts.get(tenant_id, 0.0) + 1.0
        if self._clock() >= self._next_rank_at:
            self._rank()
        top = self._top
        if tenant_id in top:
            return tenant_id
        if len(top) < self.top_k:
            top.add(tenant_id)
            return tenant_id
        return OTHER

    @property
    def labeled(self) -> frozenset[str]:
        """The non-premium tenants labeled with their own id now."""
        return frozenset(self._top)

    def _rank(self) -> None:
        ranked = heapq.nlargest(self.top_k, self._counts.items(), key=itemgetter(1))
        top = {tenant for tenant, _ in ranked}
        demoted = self._top - top
        self._top = top
        # Decay; tenants with under one request's weight left are forgotten.
        self._counts = {t: n / 2 for t, n in self._counts.items() if n >= 2}
        self._next_rank_at = self._clock() + self.window_s
        if self.on_demote is not None:
            for tenant in demoted:
                self.on_demote(tenant)


class _Series:
    """The label children of one (tenant label, model): created once, reused."""

    __slots__ = ("cached", "input", "latency", "output", "queue", "requests", "ttft")

    def __init__(self, m: GatewayMetrics, tenant: str, model: str) -> None:
        self.input = m.input_tokens.labels(tenant, model)
        self.output = m.output_tokens.labels(tenant, model)
        self.cached = m.cached_tokens.labels(tenant, model)
        self.ttft = m.ttft.labels(tenant, model)
        self.latency = m.latency.labels(tenant, model)
        self.queue = m.queue.labels(tenant, model)
        self.requests: dict[str, Counter] = {}


class GatewayMetrics:
    """Per tenant and model: requests by status, tokens, TTFT, end-to-end latency, queue
    time, rejections by reason (rate limit, quota, queue full, shed, ...)."""

    def __init__(self, registry: CollectorRegistry, labeler: TenantLabeler) -> None:
        self.labeler = labeler
        labeler.on_demote = self._forget
        tm = ["tenant", "model"]
        self.requests = Counter(
            "tenantserve_requests",
            "Requests by how they ended: completed, cancelled, error, not_run, rejected.",
            [*tm, "status"],
            registry=registry,
        )
        self.input_tokens = Counter(
            "tenantserve_input_tokens", "Prompt tokens.", tm, registry=registry
        )
        self.output_tokens = Counter(
            "tenantserve_output_tokens", "Completion tokens.", tm, registry=registry
        )
        self.cached_tokens = Counter(
            "tenantserve_cached_input_tokens",
            "Prompt tokens served from the prefix cache.",
            tm,
            registry=registry,
        )
        self.ttft = Histogram(
            "tenantserve_time_to_first_token_seconds",
            "Admitted to first token (engine) or first byte (upstream).",
            tm,
            buckets=TTFT_BUCKETS_S,
            registry=registry,
        )
        self.latency = Histogram(
            "tenantserve_request_duration_seconds",
            "Authenticated request to its end (the last token sent), admission included.",
            tm,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.queue = Histogram(
            "tenantserve_queue_wait_seconds",
            "Time waiting in the pool's fair queue.",
            tm,
            buckets=QUEUE_BUCKETS_S,
            registry=registry,
        )
        self.rejections = Counter(
            "tenantserve_rejections",
            "Requests refused at admission, by reason: rate_limited, quota_exceeded, "
            "queue_full, shed, limiter_unavailable, denied, unavailable.",
            [*tm, "reason"],
            registry=registry,
        )
        self._series: dict[tuple[str, str], _Series] = {}
        self._rejected: dict[tuple[str, str, str], Counter] = {}

    def finished(
        self,
        tenant_id: str,
        premium: bool,
        model: str,
        status: str,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int,
        ttft_s: float | None,
        duration_s: float,
        queue_s: float,
    ) -> None:
        """One admitted request ended (however it ended)."""
        tenant = self.labeler.label(tenant_id, premium)
        series = self._series.get((tenant, model))
        if series is None:
            series = self._series[tenant, model] = _Series(self, tenant, model)
        counter = series.requests.get(status)
        if counter is None:
            counter = series.requests[status] = self.requests.labels(tenant, model, status)
        counter.inc()
        if input_tokens:
            series.input.inc(input_tokens)
        if output_tokens:
            series.output.inc(output_tokens)
        if cached_tokens:
            series.cached.inc(cached_tokens)
        if ttft_s is not None:
            series.ttft.observe(ttft_s)
        series.latency.observe(duration_s)
        series.queue.observe(queue_s)

    def rejected(self, tenant_id: str, premium: bool, model: str, reason: str) -> None:
        """One request refused at admission."""
        tenant = self.labeler.label(tenant_id, premium)
        key = (tenant, model, reason)
        counter = self._rejected.get(key)
        if counter is None:
            counter = self._rejected[key] = self.rejections.labels(*key)
        counter.inc()
        series = self._series.get((tenant, model))
        if series is None:
            series = self._series[tenant, model] = _Series(self, tenant, model)
        requests = series.requests.get("rejected")
        if requests is None:
            requests = series.requests["rejected"] = self.requests.labels(tenant, model, "rejected")
        requests.inc()

    def _forget(self, tenant: str) -> None:
        """Remove a demoted tenant's series (its traffic counts as `other` from now on)."""
        for key in [k for k in self._series if k[0] == tenant]:
            series = self._series.pop(key)
            for metric in (
                self.input_tokens,
                self.output_tokens,
                self.cached_tokens,
                self.ttft,
                self.latency,
                self.queue,
            ):
                metric.remove(*key)
            for status in series.requests:
                self.requests.remove(*key, status)
        for rejected in [k for k in self._rejected if k[0] == tenant]:
            del self._rejected[rejected]
            self.rejections.remove(*rejected)
