"""NoisyNeighborMonitor: one pool's detector fed with finished requests, its verdicts
applied to the pool's fair queue and logged for operators.

    record(tenant, tokens, ttft)   -> detector.record
    every `evaluate_every_s`       -> detector.evaluate -> queue.apply + events.append

Evaluation runs on the request path when a record finds the last evaluation older than
`evaluate_every_s` (a pass over the window's samples): no background task. Time is the
queue's clock, so a test's fake clock drives the whole loop.
"""

from __future__ import annotations

from tenantserve.gateway.events import EventLog
from tenantserve.scheduling.fair_queue import FairQueue
from tenantserve.scheduling.noisy_neighbor import NoisyNeighborDetector, NoisyNeighborEvent

NOISY_NEIGHBOR = "noisy_neighbor"
DEFAULT_EVALUATE_EVERY_S = 5.0


class NoisyNeighborMonitor:
    """Feeds one pool's detector; demotes flagged tenants in its queue and logs them."""

    def __init__(
        self,
        detector: NoisyNeighborDetector,
        queue: FairQueue,
        events: EventLog,
        pool: str,
        evaluate_every_s: float = DEFAULT_EVALUATE_EVERY_S,
    ) -> None:
        self.detector = detector
        self.queue = queue
        self.events = events
        self.pool = pool
        self.evaluate_every_s = evaluate_every_s
        self._last_evaluation: float | None = None

    def record(
        self, tenant_id: str, num_tokens: int, ttft_s: float | None
    ) -> list[NoisyNeighborEvent]:
        """One finished request; returns the events of the evaluation it triggered (if any),
        already applied to the queue and logged."""
        now = self.queue.clock()
        self.detector.record(now, tenant_id, num_tokens, ttft_s)
        if self._last_evaluation is None:
            self._last_evaluation = now  # a window starts with the first request
            return []
        if now - self._last_evaluation < self.evaluate_every_s:
            return []
        self._last_evaluation = now
        events = self.detector.evaluate(now)
        for event in events:
            self.queue.apply(event)
            self.events.append(
                NOISY_NEIGHBOR,
                event.tenant_id,
                {
                    "pool": self.pool,
                    "action": event.action,
                    "token_share": round(event.share, 4),
                    "others_ttft_p95_ratio": round(event.others_ttft_p95_ratio, 4),
                    "demotion_s": self.queue.config.demotion_cooldown_s,
                },
            )
        return events
