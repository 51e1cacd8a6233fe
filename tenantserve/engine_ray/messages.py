"""What crosses the Ray boundary between a pool's client and its replicas (picklable)."""

from __future__ import annotations

from dataclasses import dataclass

from tenantserve.engine.request import RequestOutput
from tenantserve.errors import TenantServeError


@dataclass(frozen=True)
class Placement:
    """Where Serve ran a request: the replica, and whether the request's adapter was
    already multiplexed on it (None: no adapter)."""

    replica_id: str
    adapter_was_loaded: bool | None


@dataclass(frozen=True)
class ReplicaOutput:
    """One item of a replica's stream: the first carries the placement; an engine
    refusal or failure travels as `error` (the stream's last item)."""

    output: RequestOutput | None
    placement: Placement | None = None
    error: TenantServeError | None = None


@dataclass(frozen=True)
class ReplicaStats:
    """A replica's identity and the adapters multiplexed on it."""

    replica_id: str
    adapter_ids: tuple[str, ...]
    num_requests: int
