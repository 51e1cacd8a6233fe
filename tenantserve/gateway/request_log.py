"""The request log: one JSON line per completed request on the `tenantserve.requests`
logger, with who asked, where it ran, what it used and where its time went.

    {"request_id", "tenant_id", "tier", "pool", "model", "outcome",
     "prompt_tokens", "completion_tokens", "cached_tokens",
     "admission_ms"      auth'd request -> admitted (policy, quotas, limiter, fair queue)
     "queue_ms"          of which waiting in the pool's fair queue
     "engine_queue_ms"   in the engine before its first step (built-in engine)
     "ttft_ms"           admitted -> first token (engine) or first byte (upstream)
     "total_ms", "preemptions"}

`tenantserve up` prints it on stderr; operators ship it like any structured log. The
metering store (issue 5) is the durable record; this is the operational one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

logger = logging.getLogger("tenantserve.requests")


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    tenant_id: str
    tier: str
    pool: str
    model: str
    outcome: str  # "ok", "error", "aborted"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    admission_ms: float
    queue_ms: float
    engine_queue_ms: float | None
    ttft_ms: float | None
    total_ms: float
    preemptions: int = 0


def log_request(record: RequestRecord) -> None:
    if logger.isEnabledFor(logging.INFO):
        fields = {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(record).items()}
        logger.info(json.dumps(fields, separators=(",", ":")))
