"""EngineClient: what the gateway needs of an engine (`AsyncEngineClient` in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from tenantserve.engine.request import EngineRequest, RequestOutput


class EngineClient(Protocol):
    """What the gateway needs of an engine (`AsyncEngineClient` in production)."""

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]: ...

    async def abort(self, request_id: str) -> None: ...
