"""The HTTP app: the OpenAI-compatible API for tenants and the admin API for operators.

    GET  /health                  liveness (no credentials)
    /v1/...                       `routes_openai.py`: Bearer tenant API key or JWT
    /admin/...                    `routes_admin.py`: Bearer admin token

Every request gets an id and a body-size limit (`middleware.py`); every error leaves in
OpenAI's shape (`errors.py`). The parts (the pools with their backends, fair queues and
noisy-neighbour monitors; tenancy, limiter, operator event log) are built by the
composition root (`bootstrap.py`) and handed in as a `Gateway`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass, field

from fastapi import FastAPI
from starlette.routing import Route

from tenantserve.admission.limiter import RateLimiter
from tenantserve.admission.policy import PolicyConfig
from tenantserve.admission.quota_ledger import QuotaLedger
from tenantserve.gateway.auth import DEFAULT_TTL_S, Authenticator
from tenantserve.gateway.catalog import ServedModel
from tenantserve.gateway.dispatch import Dispatcher
from tenantserve.gateway.errors import install_error_handlers
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware
from tenantserve.gateway.pools import EnginePool, Pool, UpstreamPool, build_catalog
from tenantserve.gateway.routes_admin import AdminRoutes
from tenantserve.gateway.routes_openai import OpenAIRoutes
from tenantserve.tenancy.service import TenancyService

__all__ = ["EnginePool", "Gateway", "ServedModel", "UpstreamPool", "create_app"]

DEFAULT_MAX_BODY_BYTES = 4 << 20


@dataclass(frozen=True)
class Gateway:
    """What the app serves with; the composition root builds every part."""

    pools: Sequence[Pool]
    tenancy: TenancyService
    limiter: RateLimiter
    admin_token: str
    # Per-tenant quota usage; None: counted in this process only.
    quota_ledger: QuotaLedger | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    auth_cache_ttl_s: float = DEFAULT_TTL_S
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # What operators see at `GET /admin/events`; the pools' monitors append to it.
    events: EventLog = field(default_factory=EventLog)


def create_app(
    gateway: Gateway,
    on_ready: Callable[[], None] | None = None,
    resources: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The ASGI app. Its lifespan enters `resources` (database migrations, connections to
    close at shutdown), starts the pools' backends, then calls `on_ready`; it stops them in
    reverse."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            resources() if resources is not None else nullcontext(),
            AsyncExitStack() as stack,
        ):
            for pool in gateway.pools:
                await pool.start()
                stack.push_async_callback(pool.shutdown)
            if on_ready is not None:
                on_ready()
            yield

    # FastAPI's native OpenTelemetry is off: tenantserve configures no OTel provider, and
    # with it on FastAPI looks the global providers up on every request.
    app = FastAPI(
        title="tenantserve",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    auth = Authenticator(gateway.tenancy, ttl_s=gateway.auth_cache_ttl_s)
    catalog = build_catalog(gateway.pools)
    dispatcher = Dispatcher(
        gateway.pools,
        catalog,
        gateway.limiter,
        gateway.policy,
        quota_ledger=gateway.quota_ledger,
        events=gateway.events,
    )
    api = OpenAIRoutes(auth, catalog, dispatcher)

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", api.models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", api.model_card, methods=["GET"])
    # The completions routes are plain Starlette routes: no dependency solving or response
    # model per request (they take the Request and return a Response already). The
    # exception handlers still apply (Starlette's ExceptionMiddleware), and they are not
    # in the OpenAPI schema, as they never were usefully (no body model was declared).
    app.router.routes.append(Route("/v1/chat/completions", api.chat_completions, methods=["POST"]))
    app.router.routes.append(Route("/v1/completions", api.completions, methods=["POST"]))
    AdminRoutes(gateway.tenancy, auth, gateway.admin_token, gateway.events).install(app)
    install_error_handlers(app)
    # The last added is the outermost: the request id covers the 413 too.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=gateway.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
