"""The composition root: settings -> model directory -> engine client; settings ->
database -> tenancy service; the rate limiter, the fair queue with its noisy-neighbour
monitor, the operator event log and the admin token; all of them -> the HTTP app
(`Gateway`), whose lifespan migrates the database, starts the engine, and closes
everything in reverse at shutdown.

Nothing else builds engines or apps; tests call `build_service` with their own settings
(a tiny model, a small KV cache) and get the same wiring `tenantserve up` serves.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from tenantserve.admission import LimiterPolicy, RateLimiter, create_rate_limiter
from tenantserve.admission.policy import PolicyConfig
from tenantserve.config import Settings
from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.models.checkpoint import read_config
from tenantserve.engine.models.convert import ensure_default_model
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.gateway.app import Gateway, ServedModel, create_app
from tenantserve.gateway.catalog import SHARED_POOL
from tenantserve.gateway.engine_client import EngineClient
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.noisy_neighbors import NoisyNeighborMonitor
from tenantserve.scheduling.fair_queue import FairQueue, FairQueueConfig
from tenantserve.scheduling.noisy_neighbor import NoisyNeighborDetector
from tenantserve.storage.database import Database, database_url
from tenantserve.storage.migrations import migrate
from tenantserve.tenancy.jwt_auth import JwtVerifier
from tenantserve.tenancy.keys import ApiKeyHasher
from tenantserve.tenancy.service import TenancyService
from tenantserve.tenancy.unit_of_work import UnitOfWork

ADMIN_TOKEN_FILE = "admin_token"


@dataclass(frozen=True)
class Tenancy:
    """The metadata database and the tenancy use cases over it."""

    db: Database
    service: TenancyService


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
    return Tenancy(db=db, service=service)


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
    model_dir: Path
    model: ServedModel
    engine: EngineClient
    app: FastAPI
    tenancy: Tenancy
    limiter: RateLimiter
    queue: FairQueue
    events: EventLog


def resolve_model_dir(settings: Settings) -> Path:
    """The configured checkpoint, or the default model (converted on first use)."""
    if settings.model_dir is not None:
        return settings.model_dir
    return ensure_default_model(settings.data_dir)


def load_served_model(model_dir: Path) -> ServedModel:
    """The model's public name (its directory name), tokenizer and context window."""
    config = read_config(model_dir)
    return ServedModel(
        name=model_dir.name,
        tokenizer=Tokenizer(model_dir),
        max_context_tokens=config.max_position_embeddings,
        created=int((model_dir / "config.json").stat().st_mtime),
    )


def build_service(settings: Settings, on_ready: Callable[[Service], None] | None = None) -> Service:
    """Wire the service; the database is migrated and the engine process started by the
    app's lifespan (which then calls `on_ready`), not here."""
    model_dir = resolve_model_dir(settings)
    model = load_served_model(model_dir)
    engine = AsyncEngineClient(settings.engine_config(model_dir))
    tenancy = build_tenancy(settings)
    limiter = create_rate_limiter(settings.redis_url, LimiterPolicy())
    queue = FairQueue(FairQueueConfig(max_in_flight=settings.scheduler.max_num_seqs))
    events = EventLog()
    # One detector per pool; this deployment has one pool (the region's shared one).
    noisy_neighbors = NoisyNeighborMonitor(NoisyNeighborDetector(), queue, events, SHARED_POOL)
    admin_token, _ = ensure_admin_token(settings)
    gateway = Gateway(
        engine=engine,
        model=model,
        tenancy=tenancy.service,
        limiter=limiter,
        queue=queue,
        admin_token=admin_token,
        region=settings.region,
        max_body_bytes=settings.max_body_bytes,
        auth_cache_ttl_s=settings.auth_cache_ttl_s,
        policy=PolicyConfig(),
        events=events,
        noisy_neighbors=noisy_neighbors,
    )

    @asynccontextmanager
    async def resources() -> AsyncIterator[None]:
        await migrate(tenancy.db.url)
        try:
            yield
        finally:
            await limiter.close()
            await tenancy.db.dispose()

    def ready() -> None:
        if on_ready is not None:
            on_ready(service)

    app = create_app(gateway, on_ready=ready, resources=resources)
    service = Service(
        settings=settings,
        model_dir=model_dir,
        model=model,
        engine=engine,
        app=app,
        tenancy=tenancy,
        limiter=limiter,
        queue=queue,
        events=events,
    )
    return service
