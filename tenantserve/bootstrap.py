"""The composition root: settings -> model directory -> engine client -> HTTP app.

Nothing else builds engines or apps; tests call `build_service` with their own settings
(a tiny model, a small KV cache) and get the same wiring `tenantserve up` serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from tenantserve.config import Settings
from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.models.checkpoint import read_config
from tenantserve.engine.models.convert import ensure_default_model
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.gateway.app import ServedModel, create_app
from tenantserve.gateway.engine_client import EngineClient


@dataclass(frozen=True)
class Service:
    """Everything `tenantserve up` runs, wired."""

    settings: Settings
    model_dir: Path
    model: ServedModel
    engine: EngineClient
    app: FastAPI


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
    """Wire the service; the engine process starts with the app's lifespan (which then
    calls `on_ready`), not here."""
    model_dir = resolve_model_dir(settings)
    model = load_served_model(model_dir)
    engine = AsyncEngineClient(settings.engine_config(model_dir))

    def ready() -> None:
        if on_ready is not None:
            on_ready(service)

    app = create_app(engine, model, on_ready=ready)
    service = Service(settings=settings, model_dir=model_dir, model=model, engine=engine, app=app)
    return service
