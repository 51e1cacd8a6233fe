"""The composition root: settings -> pools (the built-in engine's: model directory ->
engine client; each configured upstream's: an HTTP client), each with its fair queue and
noisy-neighbour monitor; settings -> database -> tenancy service; the rate limiter, the
quota ledger, the operator event log and the admin token; all of them -> the HTTP app
(`Gateway`), whose lifespan migrates the database, starts the pools, and closes
everything in reverse at shutdown.

Nothing else builds engines or apps; tests call `build_service` with their own settings
(a tiny model, a small KV cache) and get the same wiring `tenantserve up` serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from fastapi import FastAPI

from tenantserve.admission import (
    LimiterPolicy,
    RateLimiter,
    create_rate_limiter,
)
from tenantserve.admission.policy import PolicyConfig
from tenantserve.admission.quota_ledger_metered import MeteredQuotaLedger
from tenantserve.audit.log import AuditLog
from tenantserve.billing.price_service import PriceBookService
from tenantserve.billing.service import BillingService
from tenantserve.billing.stripe_export import StripeExporter
from tenantserve.billing.unit_of_work import BillingUnitOfWork
from tenantserve.config import Settings
from tenantserve.errors import ConfigError
from tenantserve.gateway.app import Gateway, ServedModel, create_app
from tenantserve.gateway.engine_client import EngineClient
from tenantserve.gateway.eval_targets import PoolTargets
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.pools import (
    EnginePool,
    Pool,
    UpstreamPool,
)
from tenantserve.gateway.request_log import RequestLog, RequestLogFiles
from tenantserve.gateway.resolver import ModelResolver
from tenantserve.metering.pipeline import MeteringPipeline
from tenantserve.observability.record_store import RequestRecordStore
from tenantserve.observability.record_writer import RecordWriter
from tenantserve.observability.slo_monitor import SloMonitor
from tenantserve.observability.telemetry import Telemetry
from tenantserve.pool_setup import build_pools, resolve_model_dir
from tenantserve.registry.adapter_service import AdapterService
from tenantserve.registry.adapter_smoke import EngineSmokeTester
from tenantserve.registry.artifact_cache import ArtifactCache
from tenantserve.registry.artifacts import build_artifact_store
from tenantserve.registry.default_model import (
    DEFAULT_MODEL_REGISTRY_NAME,
    register_default_golden_set,
    register_default_model,
)
from tenantserve.registry.eval_gate import EvalGateConfig
from tenantserve.registry.eval_service import EvalService
from tenantserve.registry.model_smoke import ModelSmokeTester
from tenantserve.registry.rollout_eval import RolloutEvalGate
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.registry.service import RegistryService
from tenantserve.registry.unit_of_work import RegistryUnitOfWork
from tenantserve.scheduling.fair_queue import FairQueue
from tenantserve.storage.database import Database, database_url
from tenantserve.storage.migrations import migrate
from tenantserve.tenancy.jwt_auth import JwtVerifier
from tenantserve.tenancy.keys import ApiKeyHasher
from tenantserve.tenancy.service import TenancyService
from tenantserve.tenancy.unit_of_work import UnitOfWork

ADMIN_TOKEN_FILE = "admin_token"
REQUEST_LOG_DIR = "logs"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tenancy:
    """The metadata database and the use cases over it: tenancy, the model registry and
    the audit log every admin action is recorded in."""

    db: Database
    service: TenancyService
    registry: RegistryService
    audit: AuditLog


def build_tenancy(settings: Settings) -> Tenancy:
    """The database handle (SQLite in the data dir unless a URL is configured) and the
    tenancy service over it; connects to nothing and migrates nothing yet."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(database_url(settings))
    service = TenancyService(
        lambda: UnitOfWork(db.sessionmaker),
        ApiKeyHasher(settings.auth.api_key_pepper),
        JwtVerifier(settings.auth.jwt),
    )
    artifacts = build_artifact_store(settings.artifacts, settings.data_dir)
    registry = RegistryService(lambda: RegistryUnitOfWork(db.sessionmaker), artifacts)
    return Tenancy(db=db, service=service, registry=registry, audit=AuditLog(db.engine))


@dataclass(frozen=True)
class Billing:
    """Invoices, credits and the price book, over the metadata database."""

    service: BillingService
    prices: PriceBookService


def build_billing(settings: Settings, db: Database) -> Billing:
    """The billing use cases over `db`; invoices export to Stripe when an API key is set."""
    cfg = settings.billing
    exporter = (
        StripeExporter(cfg.stripe_api_key, cfg.stripe_api_base) if cfg.stripe_api_key else None
    )
    return Billing(
        BillingService(lambda: BillingUnitOfWork(db.sessionmaker), exporter),
        PriceBookService(lambda: BillingUnitOfWork(db.sessionmaker)),
    )


async def open_tenancy(settings: Settings) -> Tenancy:
    """`build_tenancy`, with the database migrated to head. Call `tenancy.db.dispose()`
    when done."""
    tenancy = build_tenancy(settings)
    await migrate(tenancy.db.url)
    return tenancy


def ensure_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin API's bearer token: TENANTSERVE_ADMIN_TOKEN if set, else the one kept in
    `data_dir/admin_token` (created, mode 0600, on first use). Returns (token, created)."""
    if settings.admin_token:
        return settings.admin_token, False
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if path.is_file():
        return path.read_text().strip(), False
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = "tsadm-" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


@dataclass(frozen=True)
class Service:
    """Everything `tenantserve up` runs, wired."""

    settings: Settings
    pools: tuple[Pool, ...]
    app: FastAPI
    tenancy: Tenancy
    limiter: RateLimiter
    events: EventLog

    @property
    def engine_pool(self) -> EnginePool:
        """The built-in engine's pool (ConfigError when it is switched off)."""
        for pool in self.pools:
            if isinstance(pool, EnginePool):
                return pool
        raise ConfigError("the built-in engine is off (TENANTSERVE_BUILTIN_ENGINE=false)")

    @property
    def model(self) -> ServedModel:
        return self.engine_pool.model

    @property
    def engine(self) -> EngineClient:
        return self.engine_pool.engine

    @property
    def queue(self) -> FairQueue:
        return self.engine_pool.queue


def registry_name(settings: Settings) -> str:
    """The registry name of the built-in engine's model: the default model's, or the
    checkpoint directory's name in lower case."""
    if settings.model_dir is None:
        return DEFAULT_MODEL_REGISTRY_NAME
    return re.sub(r"[^a-z0-9._-]+", "-", settings.model_dir.name.lower()).strip("-._") or "model"


async def bind_upstream_versions(pools: Sequence[Pool], resolver: ModelResolver) -> None:
    """Upstream pools' `name@version` models are registry versions served there (a
    rollout's canary on another server, say). Bound whether registered yet or not: a
    version is only ever routed to once the registry resolves it."""
    for pool in pools:
        if isinstance(pool, UpstreamPool):
            for model in pool.models:
                if "@" in model.name:
                    resolver.bind(model.name, pool)


def build_service(settings: Settings, on_ready: Callable[[Service], None] | None = None) -> Service:
    """Wire the service; the database is migrated and the pools' backends started by the
    app's lifespan (which then calls `on_ready`), not here."""
    events = EventLog()
    pools = build_pools(settings, events)
    tenancy = build_tenancy(settings)
    limiter = create_rate_limiter(
        settings.redis_url, LimiterPolicy(store_timeout_s=settings.redis_timeout_s)
    )
    metering = MeteringPipeline(settings.metering, settings.data_dir, tenancy.db.engine)
    quota_ledger = MeteredQuotaLedger(metering.store)
    records = RequestRecordStore(tenancy.db.engine)
    record_writer = RecordWriter(records, settings.records)
    slo = SloMonitor(records, events, every_s=settings.records.slo_evaluate_every_s)
    request_log = RequestLog(
        RequestLogFiles(settings.data_dir / REQUEST_LOG_DIR), sink=record_writer.submit
    )
    admin_token, _ = ensure_admin_token(settings)
    resolver = ModelResolver(tenancy.registry, ttl_s=settings.auth_cache_ttl_s, pools=pools)
    engine_pool = next((p for p in pools if isinstance(p, EnginePool)), None)
    served: dict[str, EnginePool] = {}  # registry ref -> engine pool, filled at start-up
    artifact_cache = ArtifactCache(tenancy.registry.store, settings.data_dir / "cache")
    evals = EvalService(  # golden sets run through the pool serving the version
        lambda: RegistryUnitOfWork(tenancy.db.sessionmaker),
        tenancy.registry,
        PoolTargets(resolver),
        gate=EvalGateConfig(**asdict(settings.evals)),
        on_event=events.append,
    )
    eval_gate = RolloutEvalGate(evals)
    rollouts = RolloutService(
        lambda: RegistryUnitOfWork(tenancy.db.sessionmaker),
        on_change=resolver.invalidate,
        smoke_test=ModelSmokeTester(artifact_cache).run,
        golden_set=eval_gate.golden_set,
        eval_gate=eval_gate,
    )
    adapters = AdapterService(
        lambda: RegistryUnitOfWork(tenancy.db.sessionmaker),
        tenancy.registry,
        artifact_cache,
        EngineSmokeTester(lambda ref: served[ref].engine if ref in served else None),
        settings.data_dir / "adapters",
        max_adapter_bytes=settings.max_adapter_bytes,
        max_lora_rank=settings.lora.max_lora_rank,
        on_event=events.append,
        on_change=resolver.forget,
        rollouts=rollouts,  # a new version of an adapter rolls out like a model version
        evals=evals.check_adapter,  # the tenant's eval set, after the smoke test
    )
    resolver.adapters = adapters
    evals.adapters = adapters
    billing = build_billing(settings, tenancy.db)
    gateway = Gateway(
        pools=pools,
        tenancy=tenancy.service,
        limiter=limiter,
        quota_ledger=quota_ledger,
        registry=tenancy.registry,
        adapters=adapters,
        resolver=resolver,
        rollouts=rollouts,
        evals=evals,
        billing=billing.service,
        prices=billing.prices,
        admin_token=admin_token,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        auth_cache_ttl_s=settings.auth_cache_ttl_s,
        policy=PolicyConfig(),
        events=events,
        meter=metering.meter,
        usage=metering.store,
        request_log=request_log,
        records=records,
        slo=slo,
        audit=tenancy.audit,
        telemetry=Telemetry.build(settings.observability, pools, host=settings.host),
    )

    @asynccontextmanager
    async def resources() -> AsyncIterator[None]:
        await migrate(tenancy.db.url)
        await adapters.fail_interrupted()
        if engine_pool is not None:
            # The engine's model is in the registry from the first start on; pinned
            # requests and tenants' adapters of it run on the built-in engine.
            version = await register_default_model(
                tenancy.registry, resolve_model_dir(settings), name=registry_name(settings)
            )
            served[version.ref] = engine_pool
            resolver.bind(version.ref, engine_pool)
            if version.name == DEFAULT_MODEL_REGISTRY_NAME:
                await register_default_golden_set(evals)
        await bind_upstream_versions(pools, resolver)
        await metering.start()
        ticking = asyncio.create_task(rollouts.run_forever())
        record_writer.start()
        slo.start()
        try:
            yield
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
            await slo.close()
            await record_writer.close()  # what the last requests left in its queue
            await metering.close()
            request_log.close()
            await limiter.close()
            await quota_ledger.close()
            await tenancy.db.dispose()

    def ready() -> None:
        if on_ready is not None:
            on_ready(service)

    app = create_app(gateway, on_ready=ready, resources=resources)
    service = Service(
        settings=settings,
        pools=pools,
        app=app,
        tenancy=tenancy,
        limiter=limiter,
        events=events,
    )
    return service
