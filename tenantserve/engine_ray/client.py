"""RayServeEngineClient: a pool's `EngineClient` over a Ray Serve deployment's handle.

Each request is one streaming call, `multiplexed_model_id` = its adapter id (or "" for
the base model), so Serve prefers a replica that already has the adapter. Leaving a
stream early (or `abort`) cancels the call; Serve propagates the cancellation to the
replica, which aborts the request in its engine. A replica that dies mid-request ends
its streams with `EngineDeadError` (an OpenAI-shaped 503 at the gateway); Serve starts
a replacement and routes new requests to the live replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator

from tenantserve.engine.request import EngineRequest, FinishReason, RequestOutput
from tenantserve.engine_ray.deploy import RayPoolDeployment
from tenantserve.engine_ray.messages import Placement, ReplicaOutput, ReplicaStats
from tenantserve.errors import EngineDeadError, EngineError, InvalidRequestError

logger = logging.getLogger(__name__)

# Placements remembered for `placement()` (the most recent requests).
MAX_PLACEMENTS = 10_000


class RayServeEngineClient:
    """The gateway's engine for a pool deployed on Ray Serve (`start` deploys it)."""

    def __init__(self, deployment: RayPoolDeployment) -> None:
        self.deployment = deployment
        self._handle: object | None = None
        self._streams: dict[str, object] = {}  # request id -> DeploymentResponseGenerator
        self._aborted: set[str] = set()
        self._placements: OrderedDict[str, Placement] = OrderedDict()

    async def start(self) -> None:
        """Connect to Ray and deploy the pool; returns once a replica serves."""
        if self._handle is None:
            self._handle = await asyncio.to_thread(self.deployment.deploy)

    async def hold_replicas(self, hold: bool, timeout_s: float) -> None:
        """A dedicated pool: raise its minimum to its replicas and wait until they serve
        (`hold`), or let it scale back to zero when idle; other pools: nothing to do.
        Raises TimeoutError when the replicas are not up within `timeout_s` (Ray may
        still place them later)."""
        target = self.deployment.held(hold)
        if not target.dedicated:
            return
        # Deployed even when this process thinks it is so already: another gateway may
        # have held or let go of the same application since (Serve makes it a no-op).
        handle = await asyncio.wait_for(asyncio.to_thread(target.deploy), timeout_s)
        self.deployment, self._handle = target, handle

    async def shutdown(self) -> None:
        """Cancel in-flight calls; delete the pool's Serve application when this gateway
        owns it (its own local Ray). On a cluster the application is shared by every
        gateway, so one gateway stopping (a rolling restart) leaves it serving."""
        for stream in list(self._streams.values()):
            stream.cancel()  # type: ignore[attr-defined]
        if self._handle is not None:
            self._handle = None
            if self.deployment.owned_by_gateway:
                await asyncio.to_thread(self.deployment.delete)

    async def generate(self, request: EngineRequest) -> AsyncGenerator[RequestOutput, None]:
        """Stream the request's outputs from a replica, the last one finished. Raises
        InvalidRequestError / EngineError as the engine did, EngineDeadError when the
        replica died. Stopping early cancels the call (the replica aborts it)."""
        from ray.exceptions import RayError, RayTaskError
        from ray.serve.exceptions import RequestCancelledError

        if self._handle is None:
            raise EngineError("the Ray pool is not started; call start() first")
        request_id = request.request_id
        if request_id in self._streams:
            raise InvalidRequestError(f"request id {request_id!r} is already in flight")
        adapter_id = request.lora.adapter_id if request.lora is not None else ""
        stream = self._handle.options(  # type: ignore[attr-defined]
            stream=True, multiplexed_model_id=adapter_id
        ).generate.remote(request)
        self._streams[request_id] = stream
        finished = False
        try:
            async for item in stream:
                assert isinstance(item, ReplicaOutput)
                if item.placement is not None:
                    self._remember(request_id, item.placement)
                if item.error is not None:
                    finished = True
                    raise item.error
                assert item.output is not None
                finished = item.output.finished
                yield item.output
                if finished:
                    return
            raise EngineDeadError("the engine replica ended the stream without finishing it")
        except (RequestCancelledError, asyncio.CancelledError):
            if request_id not in self._aborted:
                raise
            finished = True
            yield RequestOutput(request_id, (), "", finished=True, finish_reason=FinishReason.ABORT)
        except RayTaskError as e:  # a bug in the replica, not the engine's refusal
            finished = True
            raise EngineError(f"the engine replica failed: {e.cause!r}") from None
        except RayError as e:
            finished = True
            raise EngineDeadError(
                f"the engine replica serving the request failed ({type(e).__name__}); "
                "Ray Serve is replacing it"
            ) from None
        finally:
            self._streams.pop(request_id, None)
            self._aborted.discard(request_id)
            if not finished:
                stream.cancel()

    async def abort(self, request_id: str) -> None:
        """End a request early; its stream finishes with FinishReason.ABORT.

        No-op for a request that is unknown or already finished."""
        stream = self._streams.get(request_id)
        if stream is not None:
            self._aborted.add(request_id)
            stream.cancel()  # type: ignore[attr-defined]

    def placement(self, request_id: str) -> Placement | None:
        """Where a recent request ran (its replica; whether its adapter was resident)."""
        return self._placements.get(request_id)

    async def replica_stats(self) -> ReplicaStats:
        """One replica's stats (whichever Serve routes the call to)."""
        if self._handle is None:
            raise EngineError("the Ray pool is not started; call start() first")
        stats: ReplicaStats = await self._handle.stats.remote()  # type: ignore[attr-defined]
        return stats

    def _remember(self, request_id: str, placement: Placement) -> None:
        self._placements[request_id] = placement
        if len(self._placements) > MAX_PLACEMENTS:
            self._placements.popitem(last=False)
