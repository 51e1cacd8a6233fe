"""EngineDeployment: one built-in engine per Ray Serve replica.

    RayServeEngineClient ── handle.options(stream=True, multiplexed_model_id=<adapter>)
        │                         .generate.remote(EngineRequest)
        ▼
    Serve router: prefers a replica that has the adapter multiplexed, else the least loaded
        ▼
    EngineDeployment.generate ── AsyncEngineClient (the engine in a child process)
        ▲ ReplicaOutput stream (placement first, then RequestOutputs, or the error)

Adapters are multiplexed with `serve.multiplexed`, at most the engine's active adapter
slots (`LoraConfig.max_loras`) per replica, least recently used unloaded first: Serve
then knows which replica holds which adapter and routes the next request for it there.
The adapter's weights themselves are loaded (and evicted) by the engine's own
`AdapterManager`; the multiplexed entry is the replica's claim on it. The files come from
the replica's own disk: an adapter with a `source` is pulled from the artifact store
first (`adapter_files.py`), so a replica on another node than the gateway serves it too.

A request whose caller goes away is cancelled by Serve; the cancellation closes the
engine stream, which aborts the request in the engine.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from ray import serve
from ray.serve import Deployment

from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.config import EngineConfig
from tenantserve.engine.request import EngineRequest, LoraRef
from tenantserve.engine_ray.adapter_files import ReplicaAdapterFiles, ReplicaFilesConfig
from tenantserve.engine_ray.messages import Placement, ReplicaOutput, ReplicaStats
from tenantserve.errors import EngineError, InvalidRequestError

HEALTH_TIMEOUT_S = 10.0


class ResidentAdapter:
    """A multiplexed adapter on this replica; Serve calls `__del__` when it unloads it."""

    def __init__(self, adapter_id: str, resident: OrderedDict[str, LoraRef]) -> None:
        self.adapter_id = adapter_id
        self._resident = resident

    def __del__(self) -> None:
        self._resident.pop(self.adapter_id, None)


class EngineDeployment:
    """A Serve replica running one built-in engine; `generate` streams `ReplicaOutput`s."""

    async def __init__(  # type: ignore[misc]  # Serve awaits it
        self, config: EngineConfig, files: ReplicaFilesConfig | None = None
    ) -> None:
        self._engine = AsyncEngineClient(config)
        # Adapters with a source are pulled to this replica's disk (another node's).
        self._files = ReplicaAdapterFiles(files) if files is not None else None
        await self._engine.start()
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        # Adapter id -> its files, for the loader; and the adapters multiplexed here.
        self._refs: dict[str, LoraRef] = {}
        self._resident: OrderedDict[str, LoraRef] = OrderedDict()
        self._num_requests = 0

        async def load_adapter(adapter_id: str) -> ResidentAdapter:
            self._resident[adapter_id] = self._refs[adapter_id]
            return ResidentAdapter(adapter_id, self._resident)

        # Built here, as a plain function (Serve keeps its cache on the function object):
        # the cap is the engine's active adapter slots, known only from the config.
        self.load_adapter: Callable[[str], Awaitable[ResidentAdapter]] = serve.multiplexed(
            max_num_models_per_replica=config.lora.max_loras
        )(load_adapter)

    async def generate(self, request: EngineRequest) -> AsyncIterator[ReplicaOutput]:
        """The request's outputs; an engine refusal or failure is the last item's `error`."""
        self._num_requests += 1
        was_loaded: bool | None = None
        if request.lora is not None and self._files is not None:
            try:
                request = replace(request, lora=await self._files.localize(request.lora))
            except EngineError as e:  # its files could not be pulled here
                yield ReplicaOutput(None, Placement(self._replica_id, False), error=e)
                return
        if request.lora is not None:
            adapter_id = request.lora.adapter_id
            was_loaded = adapter_id in self._resident
            self._refs[adapter_id] = request.lora
            await self.load_adapter(adapter_id)
            self._refs.pop(adapter_id, None)
            self._resident.move_to_end(adapter_id, last=True)
        placement: Placement | None = Placement(self._replica_id, was_loaded)
        try:
            async for out in self._engine.generate(request):
                yield ReplicaOutput(out, placement)
                placement = None
        except (InvalidRequestError, EngineError) as e:
            yield ReplicaOutput(None, placement, error=e)

    async def stats(self) -> ReplicaStats:
        """This replica's id and multiplexed adapters (least recently used first)."""
        return ReplicaStats(self._replica_id, tuple(self._resident), self._num_requests)

    async def check_health(self) -> None:
        """Serve's health probe: the engine answers a stats query within 10 s (a
        restart of its process included)."""
        await asyncio.wait_for(self._engine.stats(), HEALTH_TIMEOUT_S)

    async def __del__(self) -> None:
        await self._engine.shutdown()


def engine_deployment(**options: Any) -> Deployment:
    """`EngineDeployment` as a Serve deployment with `options` (name, replicas, ...)."""
    return serve.deployment(**options)(EngineDeployment)
