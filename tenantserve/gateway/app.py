"""The HTTP app: the OpenAI-compatible API for tenants and the admin API for operators.

    GET  /health                  liveness (no credentials)
    /v1/...                       `routes_openai.py`: Bearer tenant API key or JWT
    /admin/...                    `routes_admin.py`: Bearer admin token
    /console/...                  the web console (`tenantserve/console/`): pages whose
                                  scripts call the two APIs above

Every request gets an id and a body-size limit (`middleware.py`); every error leaves in
OpenAI's shape (`errors.py`). The parts (the pools with their backends, fair queues and
noisy-neighbour monitors; tenancy, limiter, operator event log) are built by the
composition root (`bootstrap.py`) and handed in as a `Gateway`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass, field

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tenantserve.admission.limiter import RateLimiter
from tenantserve.admission.policy import PolicyConfig
from tenantserve.admission.quota_ledger import QuotaLedger
from tenantserve.audit.log import AuditLog
from tenantserve.audit.recorder import AuditRecorder
from tenantserve.billing.price_service import PriceBookService
from tenantserve.billing.service import BillingService
from tenantserve.console.routes import ConsoleRoutes
from tenantserve.gateway.auth import DEFAULT_TTL_S, Authenticator
from tenantserve.gateway.catalog import ServedModel
from tenantserve.gateway.dispatch import Dispatcher
from tenantserve.gateway.errors import install_error_handlers
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware
from tenantserve.gateway.pools import EnginePool, Pool, UpstreamPool, build_catalog
from tenantserve.gateway.request_log import RequestLog
from tenantserve.gateway.resolver import ModelResolver
from tenantserve.gateway.routes_account import AccountRoutes
from tenantserve.gateway.routes_adapters import AdapterRoutes
from tenantserve.gateway.routes_admin import AdminRoutes
from tenantserve.gateway.routes_audit import AuditRoutes
from tenantserve.gateway.routes_billing import BillingRoutes
from tenantserve.gateway.routes_evals import EvalRoutes
from tenantserve.gateway.routes_openai import OpenAIRoutes
from tenantserve.gateway.routes_pools import PoolRoutes
from tenantserve.gateway.routes_registry import RegistryRoutes
from tenantserve.gateway.routes_requests import RequestRoutes
from tenantserve.gateway.routes_rollout import RolloutRoutes
from tenantserve.gateway.routes_spend import SpendRoutes
from tenantserve.gateway.routes_usage import UsageRoutes
from tenantserve.gateway.tenant_move import TenantMover
from tenantserve.metering.meter import Meter
from tenantserve.metering.store import UsageStore
from tenantserve.observability.middleware import TelemetryMiddleware
from tenantserve.observability.record_store import RequestRecordStore
from tenantserve.observability.slo_monitor import SloMonitor
from tenantserve.observability.telemetry import Telemetry, metrics_endpoint
from tenantserve.registry.adapter_service import AdapterService
from tenantserve.registry.eval_service import EvalService
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.registry.service import RegistryService
from tenantserve.tenancy.service import TenancyService

__all__ = ["EnginePool", "Gateway", "ServedModel", "UpstreamPool", "create_app"]

DEFAULT_MAX_BODY_BYTES = 4 << 20
DEFAULT_BODY_TIMEOUT_S = 60.0
# Adapter uploads (up to hundreds of MB) get this many times the body timeout.
UPLOAD_TIMEOUT_FACTOR = 10


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
    # How long a request body may take to arrive (408 after it); None: no limit.
    body_timeout_s: float | None = DEFAULT_BODY_TIMEOUT_S
    auth_cache_ttl_s: float = DEFAULT_TTL_S
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # What operators see at `GET /admin/events`; the pools' monitors append to it.
    events: EventLog = field(default_factory=EventLog)
    # The model registry (`/admin/models`); None: not served by this app.
    registry: RegistryService | None = None
    # Tenant adapters (`/v1/adapters`); None: not served by this app.
    adapters: AdapterService | None = None
    # Pinned versions and adapters as `model` (built by the composition root).
    resolver: ModelResolver | None = None
    # Canary rollouts of model versions (`/admin/rollouts`); None: not served here.
    rollouts: RolloutService | None = None
    # Eval sets and runs (`/admin/evals`, `/v1/adapters/{name}/eval-set`); None: not here.
    evals: EvalService | None = None
    # Invoices, credits and the price book (`/v1/invoices`, `/admin/invoices`,
    # `/admin/prices`, `/admin/credits`); None: not served here.
    billing: BillingService | None = None
    prices: PriceBookService | None = None
    # Usage events into the outbox; None: requests are not metered (tests of other parts).
    meter: Meter | None = None
    # Metered usage (`/v1/usage`, `/admin/usage`); None: not served here.
    usage: UsageStore | None = None
    # Where request records go (the logger, and the reconciliation files).
    request_log: RequestLog = field(default_factory=RequestLog)
    # The audit log every admin action and operator read of tenant data is written to;
    # None: not audited (tests of other parts).
    audit: AuditRecorder | None = None
    # Metrics (`/metrics`, admin token) and traces; None: neither (tests of other parts).
    telemetry: Telemetry | None = None
    # Request records (`/v1/requests`, `/admin/requests`) and the SLOs computed from them
    # (`/v1/slo`, `/admin/slo`); None: not served here.
    records: RequestRecordStore | None = None
    slo: SloMonitor | None = None
    # The web console under `/console` (pages and static files; data from the API above).
    console: bool = True


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
            await mover.hold_placed_pools()  # dedicated pools tenants were moved to
            if gateway.telemetry is not None:
                await gateway.telemetry.start()
                stack.callback(gateway.telemetry.shutdown)
            if on_ready is not None:
                on_ready()
            yield

    # FastAPI's native OpenTelemetry is off: tenantserve's spans come from its own provider
    # (`observability/tracing.py`), and with it on FastAPI looks the global providers up
    # on every request.
    app = GatewayApp(
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
        resolver=gateway.resolver,
        rollouts=gateway.rollouts,
        meter=gateway.meter,
        request_log=gateway.request_log,
        telemetry=gateway.telemetry,
    )
    api = OpenAIRoutes(auth, catalog, dispatcher)

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/health", health, methods=["GET"])
    if gateway.telemetry is not None:
        metrics = metrics_endpoint(gateway.telemetry, gateway.admin_token)
        app.router.routes.append(Route("/metrics", metrics, methods=["GET"]))
    app.add_api_route("/v1/models", api.models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", api.model_card, methods=["GET"])
    # The completions routes are plain Starlette routes (no dependency solving or response
    # model per request: they take the Request and return a Response already), and a POST
    # to them skips the generic stack as well (see GatewayApp).
    completions = {"/v1/chat/completions": api.chat_completions, "/v1/completions": api.completions}
    for path, endpoint in completions.items():
        app.router.routes.append(Route(path, endpoint, methods=["POST"]))
    audit, token = gateway.audit, gateway.admin_token
    mover = TenantMover(
        gateway.pools,
        gateway.tenancy,
        auth,
        gateway.auth_cache_ttl_s,
        gateway.adapters,
        audit,
        resolver=gateway.resolver,
    )
    AdminRoutes(gateway.tenancy, auth, token, gateway.events, audit, mover).install(app)
    AccountRoutes(gateway.tenancy, auth, dispatcher.quotas.ledger, audit).install(app)
    PoolRoutes(gateway.pools, token).install(app)
    if gateway.registry is not None:
        RegistryRoutes(gateway.registry, token, audit).install(app)
    if gateway.adapters is not None:
        AdapterRoutes(auth, gateway.adapters, audit).install(app)
    if gateway.rollouts is not None:
        RolloutRoutes(gateway.rollouts, token, audit).install(app)
    if gateway.evals is not None:
        EvalRoutes(gateway.evals, auth, token, audit).install(app)
    if gateway.billing is not None and gateway.prices is not None:
        BillingRoutes(gateway.billing, gateway.prices, auth, token, audit).install(app)
    SpendRoutes(auth, gateway.billing).install(app)
    if gateway.usage is not None:
        UsageRoutes(auth, gateway.usage, token, audit).install(app)
    if isinstance(audit, AuditLog):  # the real log (not a test's recorder): readable too
        AuditRoutes(audit, token).install(app)
    if gateway.records is not None:
        RequestRoutes(auth, gateway.records, gateway.slo, token, audit).install(app)
    if gateway.console:
        ConsoleRoutes().install(app)
    install_error_handlers(app)
    # The last added is the outermost: the request id covers the 413 too.
    # Adapter uploads may be larger than any API request: they have their own limit.
    upload_limit = gateway.adapters.max_adapter_bytes + (1 << 20) if gateway.adapters else None
    body_timeout_s = gateway.body_timeout_s
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=gateway.max_body_bytes,
        path_limits={"/v1/adapters": upload_limit} if upload_limit else None,
        body_timeout_s=body_timeout_s,
        path_timeouts=(
            {"/v1/adapters": body_timeout_s * UPLOAD_TIMEOUT_FACTOR} if body_timeout_s else None
        ),
    )
    telemetry = gateway.telemetry
    if telemetry is not None:  # the request's log / span context, inside its id
        app.add_middleware(TelemetryMiddleware, tracer=telemetry.tracer)
    app.add_middleware(RequestIdMiddleware)
    for path, endpoint in completions.items():
        handled = _HandledEndpoint(endpoint, app)
        limited: ASGIApp = BodyLimitMiddleware(
            handled, max_body_bytes=gateway.max_body_bytes, body_timeout_s=body_timeout_s
        )
        if telemetry is not None:
            limited = TelemetryMiddleware(limited, telemetry.tracer)
        app.fast_routes[path] = RequestIdMiddleware(limited)
    return app


class GatewayApp(FastAPI):
    """FastAPI, except that a POST to one of `fast_routes` (the completions routes, the
    hot path) goes straight to its own short chain: the gateway's two middlewares and the
    endpoint with the app's exception handlers, as the full stack would have it, but not
    FastAPI's and Starlette's generic layers around them (server-error, telemetry and
    body-limit wrappers, the exit-stack middleware, the exception middleware's send
    wrapper, route matching), which were a tenth of the CPU of a proxied request."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.fast_routes: dict[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            fast = self.fast_routes.get(scope["path"])
            if fast is not None:
                scope["app"] = self
                await fast(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class _HandledEndpoint:
    """A `Request -> Response` endpoint as an ASGI app, its exceptions answered by the
    app's exception handlers (the most specific for the exception's class; `Exception`'s
    last, as Starlette's server-error layer would)."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]], app: FastAPI) -> None:
        self.endpoint = endpoint
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = self._handler(type(exc))
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc_type: type[Exception]) -> Callable[..., Awaitable[Response]] | None:
        handlers = self.app.exception_handlers
        for cls in exc_type.__mro__:
            if cls in handlers:
                return handlers[cls]  # type: ignore[return-value]
        return None
