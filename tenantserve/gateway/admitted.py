"""`Admission`: an admitted request's decision, rate-limit reservation and queue slot, and
`Outcome`: what the request used, with which `close` settles everything once.

    close(outcome)   1. the usage event, durably in the outbox (before the response is
                        done; skipped for a request that never reached a backend)
                     2. the rollout's observation, the queue slot with true token counts,
                        the noisy-neighbour record
                     3. the limiter commit and the quota charge (Redis round trips,
                        batched with other requests')

`meter(outcome)` does step 1 alone, for a path that answers before closing (upstream
replies: the commit runs after the response has left, the usage event before).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tenantserve.admission.limiter import Reservation
from tenantserve.admission.policy import Admitted
from tenantserve.engine.request import LoraRef
from tenantserve.gateway.pools import Pool
from tenantserve.gateway.request_log import RequestRecord
from tenantserve.metering.events import UsageEvent, UsageStatus
from tenantserve.scheduling.queue_types import Grant
from tenantserve.tenancy.model import TenantContext

if TYPE_CHECKING:
    from tenantserve.gateway.dispatch import Dispatcher

# Admissions settling in tasks of their own (strong references: a task only weakly
# referenced by the loop may be collected before it is done).
_settling: set[asyncio.Future[None]] = set()


@dataclass(frozen=True)
class Outcome:
    """What a request used. `ran`: it reached a backend (else nothing is metered)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float | None = None
    first_token_at: float | None = None  # Unix seconds
    engine_s: float = 0.0
    status: UsageStatus = UsageStatus.COMPLETED
    ran: bool = True
    # The built-in engine's own queue time and preemptions (the request log's).
    engine_queue_s: float | None = None
    preemptions: int = 0
    # Waiting for its adapter to load (built-in engine; None: no adapter or unknown).
    adapter_wait_s: float | None = None
    # The completion's text, only for a tenant that opted in to content logging.
    completion_text: str | None = None

    @property
    def error(self) -> bool:
        return self.status is UsageStatus.ERROR

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


NEVER_RAN = Outcome(ran=False)
FAILED_AT_START = Outcome(status=UsageStatus.ERROR)


@dataclass
class Admission:
    """An admitted request: its decision, rate-limit reservation and queue slot. `close`
    gives them back (once) with what the request really used."""

    ctx: TenantContext
    request_id: str
    pool: Pool
    decision: Admitted
    grant: Grant
    num_prompt_tokens: int
    # Seconds spent deciding, reserving and queueing (the `admission` server timing).
    admission_s: float
    started_at: float  # perf_counter() when admission began
    _dispatcher: Dispatcher
    _reservation: Reservation
    # The caller's adapter, when `model` named one (engine pools only).
    lora: LoraRef | None = None
    # Extra response headers (a deprecated version's Deprecation / Sunset / Warning).
    headers: Mapping[str, str] = field(default_factory=dict)
    # The registry version serving it (what a running rollout observes), when known.
    served_ref: str | None = None
    started_wall: float = field(default_factory=time.time)  # Unix seconds
    # The prompt's text, only for a tenant that opted in to content logging.
    prompt_text: str | None = None
    _closed: bool = field(default=False, init=False)
    _metered: bool = field(default=False, init=False)
    # When its usage event was written to the outbox (Unix ns, start and end): a span.
    metering_ns: tuple[int, int] | None = field(default=None, init=False)

    @property
    def max_tokens(self) -> int:
        return self.decision.max_tokens

    @property
    def adapter(self) -> str:
        """The adapter it runs with ("" for the base model): the version under rollout,
        else the caller's adapter name."""
        ref = self.served_ref
        if ref is not None and ref.startswith("adapter:"):
            return ref
        route = self.decision.route
        return route.model_id if route.adapter_id is not None else ""

    def usage_event(self, outcome: Outcome, ended_at: float | None = None) -> UsageEvent:
        route = self.decision.route
        ended = time.time() if ended_at is None else ended_at
        return UsageEvent.for_request(
            self.request_id,
            tenant_id=self.ctx.tenant_id,
            model=route.target,
            adapter=self.adapter,
            pool=self.pool.name,
            region=self.pool.region.value,
            tier=self.ctx.tier.value,
            status=outcome.status,
            input_tokens=outcome.prompt_tokens,
            cached_input_tokens=min(outcome.cached_tokens, outcome.prompt_tokens),
            output_tokens=outcome.completion_tokens,
            started_at=min(self.started_wall, ended),
            first_token_at=outcome.first_token_at,
            ended_at=ended,
            engine_seconds=outcome.engine_s,
        )

    async def meter(self, outcome: Outcome) -> None:
        """Write the request's usage event (once; nothing for a request that never ran)
        and its request log record."""
        if self._metered or not outcome.ran:
            return
        self._metered = True
        event = self.usage_event(outcome)
        meter = self._dispatcher.meter
        if meter is not None:
            written_ns = time.time_ns()
            await meter.record(event)
            self.metering_ns = (written_ns, time.time_ns())
        self._dispatcher.request_log.write(self._record(outcome, event))

    def _record(self, outcome: Outcome, event: UsageEvent) -> RequestRecord:
        ttft_s, engine_queue_s = outcome.ttft_s, outcome.engine_queue_s
        return RequestRecord(
            request_id=self.request_id,
            tenant_id=self.ctx.tenant_id,
            tier=self.grant.tier.value,
            pool=self.pool.name,
            model=self.decision.route.target,
            status=outcome.status.value,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            cached_tokens=event.cached_input_tokens,
            admission_ms=self.admission_s * 1000,
            queue_ms=self.grant.queue_time_s * 1000,
            engine_queue_ms=engine_queue_s * 1000 if engine_queue_s is not None else None,
            ttft_ms=ttft_s * 1000 if ttft_s is not None else None,
            total_ms=(time.perf_counter() - self.started_at) * 1000,
            preemptions=outcome.preemptions,
            usage=event,
            adapter=event.adapter,
            region=event.region,
            started_at=event.started_at,
            adapter_wait_ms=_ms(outcome.adapter_wait_s),
            prompt_text=self.prompt_text,
            completion_text=outcome.completion_text if self.ctx.log_content else None,
        )

    async def close(self, outcome: Outcome = NEVER_RAN) -> None:
        """Meter, then give back the slot and the reservation with what was used; runs to
        the end even when the caller is cancelled.

        A client gone mid-stream cancels the response's task, and anyio cancels every
        await of its clean-up after that: run inline, the usage event and the queue slot
        were lost at the first await. So the settling runs in a task of its own, which
        the caller's cancellation does not reach."""
        if self._closed:
            return
        self._closed = True
        settling = asyncio.ensure_future(self._settle(outcome))
        _settling.add(settling)
        settling.add_done_callback(_settling.discard)
        await asyncio.shield(settling)

    async def _settle(self, outcome: Outcome) -> None:
        await self.meter(outcome)
        dispatcher = self._dispatcher
        if dispatcher.telemetry is not None:
            dispatcher.telemetry.finished(self, outcome)
        rollouts = dispatcher.rollouts
        if rollouts is not None and self.served_ref is not None:
            latency_s = time.perf_counter() - self.started_at
            rollouts.observe(self.served_ref, latency_s, outcome.error)
        prompt, completion = outcome.prompt_tokens, outcome.completion_tokens
        self.pool.queue.release(self.grant, prompt, completion)
        total = outcome.total_tokens
        if self.pool.noisy_neighbors is not None:
            self.pool.noisy_neighbors.record(self.ctx.tenant_id, total, outcome.ttft_s)
        if total == 0:  # never ran: nothing to charge
            await dispatcher._commit(self._reservation, 0)
            return
        # Two Redis writes (each batched with other requests' by the store): the charge
        # runs in one task beside the commit (not two tasks and a gather).
        charge = asyncio.ensure_future(
            dispatcher.quotas.charge(self.ctx.tenant_id, prompt, completion)
        )
        try:
            await dispatcher._commit(self._reservation, total)
        finally:
            await charge


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
