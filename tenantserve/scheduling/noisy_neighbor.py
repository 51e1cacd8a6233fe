"""NoisyNeighborDetector: who takes most of a pool's tokens while the others' TTFT suffers.

Over a sliding window of finished requests it computes each tenant's share of tokens and
the TTFT p95 of everybody else. A tenant is flagged when its share exceeds
`share_threshold` and the others' p95 exceeds `ttft_ratio_threshold` × the pool's baseline
p95. The baseline is seeded from configuration or learned (EWMA) from windows in which no
tenant dominates. A flagged tenant is not flagged again until `cooldown_s` has passed.

Pure: time comes in as arguments; the caller applies the returned events
(`FairQueue.apply(event)` demotes the tenant) and records them for operators.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from tenantserve.errors import ConfigError


@dataclass(frozen=True)
class NoisyNeighborConfig:
    """Window, thresholds and cool-down of the detector."""

    window_s: float = 60.0
    # Share of the window's tokens above which a tenant is a suspect.
    share_threshold: float = 0.5
    # Others' TTFT p95 over the baseline above which a suspect is flagged.
    ttft_ratio_threshold: float = 1.5
    # TTFT samples of the others needed before judging (p95 of a handful is noise).
    min_samples: int = 20
    # Seed for the pool's TTFT p95 baseline; None: learned from calm windows only.
    baseline_ttft_p95_s: float | None = None
    # Weight of each calm window's p95 in the baseline EWMA.
    baseline_alpha: float = 0.1
    cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.cooldown_s < 0:
            raise ConfigError("noisy-neighbour window_s must be > 0 and cooldown_s >= 0")
        if not 0.0 < self.share_threshold < 1.0:
            raise ConfigError(f"share_threshold must be in (0, 1), got {self.share_threshold}")
        if self.ttft_ratio_threshold <= 1.0:
            raise ConfigError("ttft_ratio_threshold must be > 1")
        if not 0.0 < self.baseline_alpha <= 1.0:
            raise ConfigError("baseline_alpha must be in (0, 1]")


@dataclass(frozen=True)
class NoisyNeighborEvent:
    """A tenant found degrading the others; `action` is what the scheduler should do."""

    tenant_id: str
    share: float
    others_ttft_p95_ratio: float
    action: Literal["demote"] = "demote"
    at: float = 0.0


@dataclass(frozen=True)
class _Sample:
    time: float
    tenant_id: str
    num_tokens: int
    ttft_s: float | None


class NoisyNeighborDetector:
    """Feed finished requests with `record()`; `evaluate(now)` returns the tenants to act on."""

    def __init__(self, config: NoisyNeighborConfig | None = None) -> None:
        self.config = config or NoisyNeighborConfig()
        self.baseline_ttft_p95_s = self.config.baseline_ttft_p95_s
        self._samples: deque[_Sample] = deque()
        self._flagged_until: dict[str, float] = {}

    def record(self, now: float, tenant_id: str, num_tokens: int, ttft_s: float | None) -> None:
        """One finished request: its tokens (input + output) and its TTFT (None: no token)."""
        self._samples.append(_Sample(now, tenant_id, num_tokens, ttft_s))

    def evaluate(self, now: float) -> list[NoisyNeighborEvent]:
        """Drop samples older than the window, update the baseline, return new flags."""
        cfg = self.config
        while self._samples and self._samples[0].time < now - cfg.window_s:
            self._samples.popleft()
        self._flagged_until = {t: u for t, u in self._flagged_until.items() if u > now}
        tokens: dict[str, int] = {}
        for s in self._samples:
            tokens[s.tenant_id] = tokens.get(s.tenant_id, 0) + s.num_tokens
        total = sum(tokens.values())
        if total == 0:
            return []
        suspects = [t for t, n in tokens.items() if n / total > cfg.share_threshold]
        if not suspects:
            self._learn_baseline()
            return []
        events = []
        for tenant_id in suspects:
            if tenant_id in self._flagged_until or self.baseline_ttft_p95_s is None:
                continue
            others = [
                s.ttft_s for s in self._samples if s.tenant_id != tenant_id and s.ttft_s is not None
            ]
            if len(others) < cfg.min_samples or self.baseline_ttft_p95_s <= 0:
                continue
            ratio = p95(others) / self.baseline_ttft_p95_s
            if ratio > cfg.ttft_ratio_threshold:
                self._flagged_until[tenant_id] = now + cfg.cooldown_s
                events.append(
                    NoisyNeighborEvent(
                        tenant_id=tenant_id,
                        share=tokens[tenant_id] / total,
                        others_ttft_p95_ratio=ratio,
                        at=now,
                    )
                )
        return events

    def _learn_baseline(self) -> None:
        ttfts = [s.ttft_s for s in self._samples if s.ttft_s is not None]
        if len(ttfts) < self.config.min_samples:
            return
        current = p95(ttfts)
        if self.baseline_ttft_p95_s is None:
            self.baseline_ttft_p95_s = current
        else:
            a = self.config.baseline_alpha
            self.baseline_ttft_p95_s = (1 - a) * self.baseline_ttft_p95_s + a * current


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
