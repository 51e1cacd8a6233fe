"""The HTTP app: the OpenAI-compatible API for tenants and the admin API for operators.

    GET  /health                  liveness (no credentials)
    /v1/...                       `routes_openai.py`: Bearer tenant API key or JWT
    /admin/...                    `routes_admin.py`: Bearer admin token

Every request gets an id and a body-size limit (`middleware.py`); every error leaves in
OpenAI's shape (`errors.py`). The parts (engine, tenancy, limiter, queue, noisy-neighbour
monitor, operator event log) are built by
the composition root (`bootstrap.py`) and handed in as a `Gateway`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field

from fastapi import FastAPI

from tenantserve.admission.limiter import RateLimiter
from tenantserve.admission.policy import PolicyConfig
from tenantserve.gateway.auth import DEFAULT_TTL_S, Authenticator
from tenantserve.gateway.catalog import ModelCatalog, ServedModel
from tenantserve.gateway.dispatch import Dispatcher
from tenantserve.gateway.engine_client import EngineClient
from tenantserve.gateway.errors import install_error_handlers
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware
from tenantserve.gateway.noisy_neighbors import NoisyNeighborMonitor
from tenantserve.gateway.routes_admin import AdminRoutes
from tenantserve.gateway.routes_openai import OpenAIRoutes
from tenantserve.scheduling.fair_queue import FairQueue
from tenantserve.tenancy.model import Region
from tenantserve.tenancy.service import TenancyService

__all__ = ["Gateway", "ServedModel", "create_app"]

DEFAULT_MAX_BODY_BYTES = 4 << 20


@dataclass(frozen=True)
class Gateway:
    """What the app serves with; the composition root builds every part."""

    engine: EngineClient
    model: ServedModel
    tenancy: TenancyService
    limiter: RateLimiter
    queue: FairQueue
    admin_token: str
    region: Region = Region.US
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    auth_cache_ttl_s: float = DEFAULT_TTL_S
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # What operators see at `GET /admin/events`; the monitor appends to the same log.
    events: EventLog = field(default_factory=EventLog)
    # None: no noisy-neighbour detection on this pool.
    noisy_neighbors: NoisyNeighborMonitor | None = None


def create_app(
    gateway: Gateway,
    on_ready: Callable[[], None] | None = None,
    resources: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The ASGI app. Its lifespan enters `resources` (database migrations, connections to
    close at shutdown), starts the engine, then calls `on_ready`; it stops them in reverse."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with resources() if resources is not None else nullcontext():
            await gateway.engine.start()
            try:
                if on_ready is not None:
                    on_ready()
                yield
            finally:
                await gateway.engine.shutdown()

    app = FastAPI(title="tenantserve", lifespan=lifespan)
    auth = Authenticator(gateway.tenancy, ttl_s=gateway.auth_cache_ttl_s)
    catalog = ModelCatalog(gateway.model, gateway.region)
    dispatcher = Dispatcher(
        gateway.engine,
        catalog,
        gateway.limiter,
        gateway.queue,
        gateway.policy,
        noisy_neighbors=gateway.noisy_neighbors,
    )
    api = OpenAIRoutes(auth, catalog, dispatcher)

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", api.models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", api.model_card, methods=["GET"])
    app.add_api_route("/v1/chat/completions", api.chat_completions, methods=["POST"])
    app.add_api_route("/v1/completions", api.completions, methods=["POST"])
    AdminRoutes(gateway.tenancy, auth, gateway.admin_token, gateway.events).install(app)
    install_error_handlers(app)
    # The last added is the outermost: the request id covers the 413 too.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=gateway.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
