"""The serving pools a deployment starts with (`build_pools`): the built-in engine's shared
pool (one engine process, or Ray Serve deployments: shared, reserved and dedicated), and
the pools file's upstream and vLLM servers, each with its fair queue and noisy-neighbour
monitor."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tenantserve.config import Settings
from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.models.checkpoint import read_config
from tenantserve.engine.models.convert import ensure_default_model
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import ConfigError
from tenantserve.gateway.catalog import SHARED_POOL, ServedModel
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.noisy_neighbors import NoisyNeighborMonitor
from tenantserve.gateway.pools import (
    EnginePool,
    Pool,
    UpstreamModel,
    UpstreamPool,
    connections_for,
)
from tenantserve.gateway.upstream import OpenAIUpstream
from tenantserve.gateway.vllm_pool import build_vllm_pool
from tenantserve.pool_config import PoolConfig
from tenantserve.scheduling.fair_queue import FairQueue, FairQueueConfig
from tenantserve.scheduling.noisy_neighbor import NoisyNeighborDetector


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


def build_engine_pool(settings: Settings, events: EventLog) -> EnginePool:
    """The built-in engine serving the configured (or default) model in the region's
    shared pool; its fair queue admits as many requests as the engine batches."""
    model_dir = resolve_model_dir(settings)
    queue = FairQueue(FairQueueConfig(max_in_flight=settings.scheduler.max_num_seqs))
    return EnginePool(
        name=SHARED_POOL,
        engine=AsyncEngineClient(settings.engine_config(model_dir)),
        model=load_served_model(model_dir),
        queue=queue,
        region=settings.region,
        noisy_neighbors=NoisyNeighborMonitor(NoisyNeighborDetector(), queue, events, SHARED_POOL),
    )


def build_ray_pools(settings: Settings, events: EventLog) -> list[EnginePool]:
    """The built-in engine's pools as Ray Serve deployments (`--engine ray`): the shared
    pool, autoscaled between the configured replica counts, one pool per reserved
    premium tenant that keeps at least its reservation, and the dedicated pools (no
    replica until a tenant is moved onto one)."""
    from tenantserve.engine_ray.adapter_files import ReplicaFilesConfig
    from tenantserve.engine_ray.client import RayServeEngineClient
    from tenantserve.engine_ray.deploy import RayPoolDeployment

    model_dir = resolve_model_dir(settings)
    model = load_served_model(model_dir)
    ray = settings.ray
    adapter_dir = ray.adapter_dir or str(Path(tempfile.gettempdir()) / "tenantserve-ray-adapters")
    files = ReplicaFilesConfig(settings.artifacts, str(settings.data_dir), adapter_dir)
    pools = []
    # (name, reserved for, min replicas, max replicas, dedicated)
    specs: list[tuple[str, str | None, int, int, bool]] = [
        (SHARED_POOL, None, ray.min_replicas, ray.max_replicas, False)
    ]
    specs += [
        (f"reserved-{tenant}", tenant, n, max(n, ray.max_replicas), False)
        for tenant, n in ray.reserved
    ]
    # Dedicated pools start with no replica: a tenant move brings them up.
    specs += [(name, None, 0, n, True) for name, n in ray.dedicated]
    for name, tenant, min_replicas, max_replicas, dedicated in specs:
        # Serve queues beyond what the replicas batch; the fair queue admits what the
        # most replicas could run at once (and premium requests past that).
        in_flight = settings.scheduler.max_num_seqs * max_replicas
        queue = FairQueue(FairQueueConfig(max_in_flight=in_flight))
        headroom = queue.config.max_headroom
        deployment = RayPoolDeployment(
            name,
            settings.engine_config(model_dir),
            ray,
            min_replicas,
            max_replicas,
            headroom,
            dedicated=dedicated,
            files=files,
        )
        pools.append(
            EnginePool(
                name=name,
                engine=RayServeEngineClient(deployment),
                model=model,
                queue=queue,
                region=settings.region,
                reserved_for=frozenset({tenant}) if tenant else frozenset(),
                dedicated=dedicated,
                noisy_neighbors=NoisyNeighborMonitor(NoisyNeighborDetector(), queue, events, name),
            )
        )
    return pools


def build_upstream_pool(cfg: PoolConfig, events: EventLog) -> UpstreamPool:
    """An external OpenAI-compatible server; `models` entries are `name` or
    `name=upstream-name`."""
    models = []
    for entry in cfg.models:
        name, _, upstream_name = entry.partition("=")
        models.append(UpstreamModel(name, upstream_name or name, cfg.max_model_len))
    queue = FairQueue(FairQueueConfig(max_in_flight=cfg.max_in_flight))
    upstream = OpenAIUpstream(cfg.base_url, cfg.api_key, cfg.timeout_s, connections_for(queue))
    return UpstreamPool(
        name=cfg.name,
        upstream=upstream,
        models=tuple(models),
        queue=queue,
        region=cfg.region,
        reserved_for=frozenset(cfg.reserved_for),
        dedicated=cfg.dedicated,
        noisy_neighbors=NoisyNeighborMonitor(NoisyNeighborDetector(), queue, events, cfg.name),
    )


def build_configured_pool(cfg: PoolConfig, events: EventLog, data_dir: Path) -> Pool:
    """A `--pools` entry's pool: a vLLM server's (`kind = "vllm"`) or an upstream's."""
    if cfg.kind != "vllm":
        return build_upstream_pool(cfg, events)
    plain = build_upstream_pool(cfg, events)  # the models, queue and monitor as for any
    return build_vllm_pool(
        cfg,
        plain.models,
        plain.queue,
        data_dir,
        noisy_neighbors=plain.noisy_neighbors,
        dedicated=plain.dedicated,
    )


def build_pools(settings: Settings, events: EventLog) -> tuple[Pool, ...]:
    pools: list[Pool] = []
    if settings.builtin_engine and settings.engine_backend == "ray":
        pools.extend(build_ray_pools(settings, events))
    elif settings.builtin_engine:
        pools.append(build_engine_pool(settings, events))
    pools.extend(build_configured_pool(cfg, events, settings.data_dir) for cfg in settings.pools)
    if not pools:
        raise ConfigError(
            "nothing to serve: the built-in engine is off and no pools are configured "
            "(pass --pools FILE or drop --no-engine)"
        )
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise ConfigError(f"pool names must be unique; {SHARED_POOL!r} is the built-in engine's")
    return tuple(pools)
