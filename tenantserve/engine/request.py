"""What crosses the engine boundary (typed, picklable messages) and a sequence's state.

`EngineRequest` goes in, `RequestOutput`s come out; `Sequence` is the engine's
mutable view of one request and never leaves the engine process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import NamedTuple

from tenantserve.errors import InvalidRequestError
from tenantserve.tiers import Tier


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


# Temperatures below this are greedy: dividing logits by a vanishing temperature overflows
# them to inf, and the softmax of that is NaN (as vLLM does).
MIN_SAMPLING_TEMPERATURE = 1e-5
# The seeds a torch generator takes.
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 (or below MIN_SAMPLING_TEMPERATURE) is greedy;
    top_k 0 means off."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidRequestError(
                f"temperature must be between 0 and 2, got {self.temperature}"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidRequestError(f"top_k must be >= 0, got {self.top_k}")
        if self.seed is not None and not MIN_SEED <= self.seed <= MAX_SEED:
            raise InvalidRequestError(f"seed must be between {MIN_SEED} and {MAX_SEED}")
        if any(not s for s in self.stop):
            raise InvalidRequestError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_SAMPLING_TEMPERATURE


class LoraFile(NamedTuple):
    """One stored file of an adapter: its path in the adapter, size and sha256."""

    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class LoraSource:
    """Where a node without the adapter's files pulls them: the adapter's artifact in the
    artifact store, and its files (a copy is checked against them)."""

    artifact_uri: str
    files: tuple[LoraFile, ...]


@dataclass(frozen=True)
class LoraRef:
    """A PEFT adapter by id (unique per deployment) and the directory holding its files;
    `source` lets an engine on another node (a Ray replica) pull its own copy."""

    adapter_id: str
    path: str
    source: LoraSource | None = None


@dataclass(frozen=True)
class EngineRequest:
    """One generation request as the engine receives it."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams
    tenant_id: str
    tier: Tier = Tier.STANDARD
    lora: LoraRef | None = None
    # Seeds the prefix-cache hash chain. Set by the server from the authenticated
    # tenant, never by the client; defaults to the tenant id.
    cache_salt: str | None = None
    arrival_time: float = field(default_factory=time.monotonic)

    @property
    def salt(self) -> str:
        return self.cache_salt if self.cache_salt is not None else self.tenant_id


@dataclass(frozen=True)
class RequestMetrics:
    """Per-request accounting, reported once with the final output."""

    num_prompt_tokens: int
    num_cached_tokens: int
    num_completion_tokens: int
    queue_time_s: float
    ttft_s: float | None
    # Share of engine step wall time spent on this request (GPU-seconds basis).
    engine_time_s: float
    num_preemptions: int
    # Waiting for its adapter to be loaded into a device slot (0.0: it was resident or on
    # the host); None: no adapter.
    adapter_wait_s: float | None = None


@dataclass(frozen=True)
class RequestOutput:
    """New tokens (and text) of one request since its previous output."""

    request_id: str
    new_token_ids: tuple[int, ...]
    text_delta: str
    finished: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None
    # "invalid_request" (the client's fault: a 4xx) or "engine_error" (ours: a 5xx).
    error_code: str | None = None
    metrics: RequestMetrics | None = None


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """The engine's state of one request: tokens, KV blocks, progress, timings."""

    def __init__(self, request: EngineRequest) -> None:
        self.request = request
        self.request_id = request.request_id
        self.token_ids: list[int] = list(request.prompt_token_ids)
        self.num_prompt_tokens = len(request.prompt_token_ids)
        # Tokens whose K/V are in the cache (computed or found in the prefix cache).
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache
        self.block_ids: list[int] = []
        self.status = SequenceStatus.WAITING
        self.lora_slot = 0  # 0: base model; set by the adapter manager when scheduled
        self.num_preemptions = 0
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.engine_time_s = 0.0
        # Adapter loading: when it first waited for a slot, and how long until it got one.
        self.adapter_wait_since: float | None = None
        self.adapter_wait_s: float | None = None
        # Detokenization state, owned by the output processor.
        self.output_text = ""
        self.num_emitted_chars = 0
        self.num_emitted_tokens = 0
        self.finish_reason: FinishReason | None = None

    @property
    def tier(self) -> Tier:
        return self.request.tier

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_prefilling(self) -> bool:
        """True while tokens that were already known (prompt, or output before a preemption)
        still need their K/V computed."""
        return self.num_computed_tokens < self.num_tokens - 1

    def preemption_key(self) -> tuple[int, float]:
        """Smaller is preempted first: lowest tier, then newest within a tier."""
        return (self.tier.priority, -self.request.arrival_time)

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, tier={self.tier}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, status={self.status.value})"
        )
