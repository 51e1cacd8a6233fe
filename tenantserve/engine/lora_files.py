"""PEFT LoRA adapter files (adapter_config.json + adapter_model.safetensors), parsed.

`read_adapter_config` is the cheap check made at admission (one small JSON file);
`read_adapter` reads and validates the tensors and is meant to run off the step loop.
Both raise `AdapterError` with a message that names the problem and the file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open

from tenantserve.engine.models.llama import LlamaConfig
from tenantserve.errors import AdapterError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# Hugging Face sub-modules a LoRA adapter may target, and the block that holds each.
SUPPORTED_MODULES: Mapping[str, str] = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.(self_attn|mlp)\."
    r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)\.weight$"
)
# PEFT options that change what the adapter computes beyond x @ A^T @ B^T * scale
# (LoRA variants, extra trained modules, biases): refused when set.
_UNSUPPORTED_OPTIONS = (
    "use_dora",
    "lora_bias",
    "modules_to_save",
    "trainable_token_indices",
    "target_parameters",
    "layer_replication",
    "alora_invocation_tokens",
    "use_qalora",
    "use_bdlora",
    "velora_config",
    "kasa_config",
    "arrow_config",
    "monteclora_config",
)


@dataclass(frozen=True)
class AdapterConfig:
    """What `adapter_config.json` says about rank, scaling and targets (validated)."""

    rank: int
    lora_alpha: float
    use_rslora: bool
    # Supported sub-modules the config targets (q_proj, ..., down_proj).
    target_modules: frozenset[str]
    rank_pattern: Mapping[str, int]
    alpha_pattern: Mapping[str, float]

    def rank_of(self, module_key: str) -> int:
        """Rank of one module (`model.layers.3.self_attn.q_proj`), honouring rank_pattern."""
        return int(self.rank_pattern.get(_pattern_key(self.rank_pattern, module_key), self.rank))

    def scale_of(self, module_key: str) -> float:
        """PEFT's scaling of one module: alpha / r, or alpha / sqrt(r) with use_rslora."""
        rank = self.rank_of(module_key)
        alpha = float(
            self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module_key), self.lora_alpha)
        )
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


class LoraPair(NamedTuple):
    """One sub-module's factors on the host: delta(x) = x @ a.T @ b.T."""

    a: torch.Tensor  # [r, in] float32
    b: torch.Tensor  # [out, r] float32, PEFT's scale already folded in


@dataclass(frozen=True)
class LoraAdapterWeights:
    """A parsed, validated adapter as host tensors, keyed by (layer, sub-module)."""

    adapter_id: str
    # Largest rank of any of its modules.
    rank: int
    pairs: Mapping[tuple[int, str], LoraPair]

    @property
    def target_modules(self) -> frozenset[str]:
        """Sub-modules (q_proj, ...) that carry weights in at least one layer."""
        return frozenset(sub for _, sub in self.pairs)

    @property
    def num_bytes(self) -> int:
        """Host memory held by the tensors."""
        return sum(p.a.nbytes + p.b.nbytes for p in self.pairs.values())


def module_shape(model_cfg: LlamaConfig, sub: str) -> tuple[int, int]:
    """(in_features, out_features) of a supported Hugging Face sub-module."""
    hidden, inter = model_cfg.hidden_size, model_cfg.intermediate_size
    shapes = {
        "q_proj": (hidden, model_cfg.q_size),
        "k_proj": (hidden, model_cfg.kv_size),
        "v_proj": (hidden, model_cfg.kv_size),
        "o_proj": (model_cfg.q_size, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    return shapes[sub]


def read_adapter_config(adapter_dir: Path, model_cfg: LlamaConfig, max_rank: int) -> AdapterConfig:
    """Parse and validate `adapter_config.json`; reads nothing else. Raises AdapterError."""
    path = Path(adapter_dir) / CONFIG_FILE
    if not Path(adapter_dir).is_dir():
        raise AdapterError(f"adapter directory {adapter_dir} does not exist")
    if not path.is_file():
        raise AdapterError(f"adapter {adapter_dir} has no {CONFIG_FILE}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    return _parse_config(raw, path, model_cfg, max_rank)


def read_adapter(
    adapter_id: str, adapter_dir: Path, model_cfg: LlamaConfig, max_rank: int
) -> LoraAdapterWeights:
    """Read and validate an adapter's files: known keys, A and B for each module, shapes that
    fit the model, rank <= max_rank, finite values. Disk I/O: call off the step loop."""
    cfg = read_adapter_config(adapter_dir, model_cfg, max_rank)
    path = Path(adapter_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise AdapterError(f"adapter {adapter_dir} has no {WEIGHTS_FILE}")
    factors: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                m = _KEY.match(key)
                if m is None:
                    raise AdapterError(f"{path}: unknown tensor {key!r}")
                layer, block, sub, which = int(m[1]), m[2], m[3], m[4]
                if SUPPORTED_MODULES[sub] != block:
                    raise AdapterError(f"{path}: unknown tensor {key!r}")
                if layer >= model_cfg.num_hidden_layers:
                    raise AdapterError(
                        f"{path}: tensor {key!r} is for layer {layer}, but the model has "
                        f"{model_cfg.num_hidden_layers} layers"
                    )
                factors.setdefault((layer, sub), {})[which] = f.get_tensor(key)
    except AdapterError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise AdapterError(f"{path}: cannot read safetensors file ({e})") from e
    if not factors:
        raise AdapterError(f"{path}: contains no LoRA tensors")
    pairs: dict[tuple[int, str], LoraPair] = {}
    for (layer, sub), ab in sorted(factors.items()):
        pairs[(layer, sub)] = _validated_pair(cfg, model_cfg, path, layer, sub, ab, max_rank)
    rank = max(p.a.shape[0] for p in pairs.values())
    return LoraAdapterWeights(adapter_id=adapter_id, rank=rank, pairs=pairs)


def _validated_pair(
    cfg: AdapterConfig,
    model_cfg: LlamaConfig,
    path: Path,
    layer: int,
    sub: str,
    ab: Mapping[str, torch.Tensor],
    max_rank: int,
) -> LoraPair:
    module_key = f"model.layers.{layer}.{SUPPORTED_MODULES[sub]}.{sub}"
    if sub not in cfg.target_modules:
        raise AdapterError(f"{path}: has tensors for {module_key}, which is not in target_modules")
    for which in ("A", "B"):
        if which not in ab:
            raise AdapterError(f"{path}: {module_key} has no lora_{which} tensor")
    a, b = ab["A"], ab["B"]
    in_features, out_features = module_shape(model_cfg, sub)
    rank = cfg.rank_of(module_key)
    if rank > max_rank:
        raise AdapterError(f"{path}: {module_key} has rank {rank}, above the limit {max_rank}")
    for which, t, shape in (("A", a, (rank, in_features)), ("B", b, (out_features, rank))):
        if tuple(t.shape) != shape:
            raise AdapterError(
                f"{path}: {module_key}.lora_{which} has shape {tuple(t.shape)}, "
                f"expected {shape} for this model and rank {rank}"
            )
        if not t.is_floating_point():
            raise AdapterError(f"{path}: {module_key}.lora_{which} has dtype {t.dtype}")
        if not torch.isfinite(t).all():
            raise AdapterError(f"{path}: {module_key}.lora_{which} contains NaN or Inf")
    b_scaled = b.float() * cfg.scale_of(module_key)
    return LoraPair(a=a.float().contiguous(), b=b_scaled.contiguous())


def _parse_config(
    raw: Mapping[str, Any], path: Path, model_cfg: LlamaConfig, max_rank: int
) -> AdapterConfig:
    peft_type = raw.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise AdapterError(f"{path}: peft_type {peft_type!r} is not supported (only LORA)")
    rank = raw.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterError(f"{path}: r must be a positive integer, got {rank!r}")
    rank_pattern = raw.get("rank_pattern") or {}
    alpha_pattern = raw.get("alpha_pattern") or {}
    if not isinstance(rank_pattern, dict) or not isinstance(alpha_pattern, dict):
        raise AdapterError(f"{path}: rank_pattern and alpha_pattern must be objects")
    for key, r in [("r", rank), *rank_pattern.items()]:
        if not isinstance(r, int) or r < 1:
            raise AdapterError(f"{path}: rank of {key!r} must be a positive integer, got {r!r}")
        if r > max_rank:
            raise AdapterError(
                f"{path}: adapter rank {r} ({key}) is above the limit max_lora_rank={max_rank}"
            )
    alpha = raw.get("lora_alpha", 8)
    for key, value in [("lora_alpha", alpha), *alpha_pattern.items()]:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise AdapterError(f"{path}: lora_alpha of {key!r} must be a number, got {value!r}")
    bias = raw.get("bias", "none")
    if bias != "none":
        raise AdapterError(f"{path}: bias={bias!r} is not supported (only 'none')")
    for option in _UNSUPPORTED_OPTIONS:
        if raw.get(option):
            raise AdapterError(f"{path}: option {option}={raw[option]!r} is not supported")
    return AdapterConfig(
        rank=rank,
        lora_alpha=float(alpha),
        use_rslora=bool(raw.get("use_rslora", False)),
        target_modules=_target_modules(raw.get("target_modules"), path, model_cfg),
        rank_pattern=dict(rank_pattern),
        alpha_pattern=dict(alpha_pattern),
    )


def _target_modules(targets: object, path: Path, model_cfg: LlamaConfig) -> frozenset[str]:
    """The supported sub-modules named by target_modules: a list, a regex, or 'all-linear'."""
    if targets == "all-linear":
        return frozenset(SUPPORTED_MODULES)
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as e:
            raise AdapterError(f"{path}: target_modules regex {targets!r} is invalid ({e})") from e
        found = frozenset(
            sub
            for sub, block in SUPPORTED_MODULES.items()
            if any(
                pattern.fullmatch(f"model.layers.{layer}.{block}.{sub}")
                for layer in range(model_cfg.num_hidden_layers)
            )
        )
        if not found:
            raise AdapterError(
                f"{path}: target_modules {targets!r} matches no supported module "
                f"({', '.join(SUPPORTED_MODULES)})"
            )
        return found
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise AdapterError(f"{path}: target_modules must be a non-empty list or a string")
    found_subs: set[str] = set()
    for target in targets:
        sub = target.rsplit(".", 1)[-1]
        if sub not in SUPPORTED_MODULES:
            raise AdapterError(
                f"{path}: target module {target!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_MODULES)})"
            )
        found_subs.add(sub)
    return frozenset(found_subs)


def _pattern_key(patterns: Mapping[str, object], module_key: str) -> str:
    # PEFT's get_pattern_key: the first pattern that matches a suffix of the module name.
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module_key):
            return key
    return module_key
