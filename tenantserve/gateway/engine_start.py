"""An admitted request started on a built-in engine pool: the engine request (the admitted
max_tokens, the tenant id, the scheduled tier, the tenant's cache salt) and the release
that closes the admission with what the generation used, however it ended (completed,
cancelled, error; engine time, TTFT, cached tokens, preemptions).

`is_failure` tells a failure on our side (engine, upstream: a 5xx) from the client's
mistake or departure, for either backend's outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tenantserve.engine.request import EngineRequest, SamplingParams
from tenantserve.errors import EngineError, InvalidRequestError
from tenantserve.gateway.admitted import FAILED_AT_START, NEVER_RAN, Admission, Outcome
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.pools import EnginePool
from tenantserve.gateway.streaming import Generation
from tenantserve.metering.events import UsageStatus

if TYPE_CHECKING:
    from tenantserve.gateway.dispatch import Body


def is_failure(e: BaseException) -> bool:
    """Whether a request that raised `e` failed on our side (a 5xx: engine, upstream), as
    opposed to the client's mistake or departure."""
    if isinstance(e, ApiError):
        return e.status >= 500
    return isinstance(e, EngineError)


def sampling_for(admission: Admission, body: Body) -> SamplingParams:
    """The engine's sampling parameters of an admitted request (its admitted max_tokens)."""
    return SamplingParams(
        max_tokens=admission.max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        seed=body.seed,
        stop=body.stop_sequences(),
    )


async def start_generation(admission: Admission, body: Body, prompt: Sequence[int]) -> Generation:
    """The started generation on the admitted engine pool; closing it closes the
    admission. Raises what the engine raised at start (the admission closed)."""
    pool = admission.pool
    if not isinstance(pool, EnginePool):
        await admission.close(NEVER_RAN)
        raise TypeError(f"pool {pool.name} is not an engine pool")
    try:
        sampling = sampling_for(admission, body)
    except InvalidRequestError:
        await admission.close(NEVER_RAN)  # its seat and rate-limit slot back
        raise
    request = EngineRequest(
        request_id=admission.request_id,
        prompt_token_ids=tuple(prompt),
        sampling=sampling,
        tenant_id=admission.ctx.tenant_id,
        tier=admission.grant.tier,
        lora=admission.lora,
        cache_salt=admission.ctx.tenant_id,
    )

    async def release(generation: Generation) -> None:
        if generation.start_error is not None:  # never produced anything
            failed = is_failure(generation.start_error)
            await admission.close(FAILED_AT_START if failed else NEVER_RAN)
            return
        usage = generation.usage()
        metrics = generation.metrics
        ttft_s = metrics.ttft_s if metrics else None
        if generation.failed:
            status = UsageStatus.ERROR
        elif metrics is None:  # aborted: the client left, or the stream was closed
            status = UsageStatus.CANCELLED
        else:
            status = UsageStatus.COMPLETED
        text = generation.text_parts
        await admission.close(
            Outcome(
                completion_text="".join(text) if text is not None else None,
                adapter_wait_s=metrics.adapter_wait_s if metrics else None,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.prompt_tokens_details.cached_tokens,
                ttft_s=ttft_s,
                first_token_at=generation.first_token_at,
                engine_s=metrics.engine_time_s if metrics else 0.0,
                status=status,
                engine_queue_s=metrics.queue_time_s if metrics else None,
                preemptions=metrics.num_preemptions if metrics else 0,
            )
        )

    try:
        generation = await Generation.start(pool.engine, request, on_close=release)
    except BaseException as e:
        # A no-op when `release` ran.
        await admission.close(FAILED_AT_START if is_failure(e) else NEVER_RAN)
        raise
    if admission.ctx.log_content:
        generation.text_parts = []  # the text is kept for the request record
    return generation
