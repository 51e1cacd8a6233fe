"""The built-in engine's settings: one frozen `EngineConfig` (model, device, weight storage,
decode attention) and the component configs it hands down (`Scheduler(cfg.scheduler)`).

Plain dataclasses with their defaults; `tenantserve.config.Settings` fills them from the
environment, nothing here reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tenantserve.errors import ConfigError
from tenantserve.tiers import Tier


@dataclass(frozen=True)
class CacheConfig:
    """Paged KV cache: block geometry, size, and per-tier block budgets."""

    block_size: int = 16
    # Memory for K and V of all layers; the block count is derived from it
    # unless num_blocks is given.
    kv_cache_bytes: int = 1 << 30
    num_blocks: int | None = None
    enable_prefix_cache: bool = True
    # Share of all blocks a tenant of the tier may hold before its cached blocks
    # are the first to be evicted.
    tier_block_budget: Mapping[Tier, float] = field(
        default_factory=lambda: {Tier.FREE: 0.10, Tier.STANDARD: 0.25, Tier.PREMIUM: 0.50}
    )


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching limits for one engine step."""

    max_num_seqs: int = 64
    # Per-step token budget; prompts longer than what is left are prefilled in chunks.
    max_num_batched_tokens: int = 512
    # While a higher tier prefills, lower tiers' sequences skip the step (see scheduler).
    isolate_priority_prefill: bool = True


@dataclass(frozen=True)
class LoraConfig:
    """Multi-LoRA: active slots on the device, host LRU, largest rank accepted."""

    max_loras: int = 8
    max_cpu_loras: int = 32
    max_lora_rank: int = 16
    loader_threads: int = 1


@dataclass(frozen=True)
class EngineConfig:
    """One engine: the model it serves and how."""

    model_dir: Path
    device: str = "cpu"
    # Weight storage: "fp32" (default), "bf16", or "int8" (weight-only, per-channel).
    quantization: str = "fp32"
    max_model_len: int | None = None
    num_threads: int | None = None
    seed: int = 0
    # Decode attention: "kernel" (C++, reads the paged cache in place; CPU only), "sdpa"
    # (gather + PyTorch SDPA; any device), or "auto" (the kernel on CPU when it builds).
    decode_attention: str = "auto"
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if self.decode_attention not in ("auto", "kernel", "sdpa"):
            raise ConfigError(
                f"decode_attention must be auto, kernel or sdpa, not {self.decode_attention!r}"
            )
        if self.quantization not in ("fp32", "bf16", "int8"):
            raise ConfigError(f"quantization must be fp32, bf16 or int8, not {self.quantization!r}")
