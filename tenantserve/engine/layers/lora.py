"""Batched multi-LoRA (Punica-style): many adapters in one forward pass, weights never merged.

`apply_lora(model, cfg)` is a transform: it wraps every decoder layer's qkv_proj, o_proj,
gate_up_proj and down_proj in a `LoraLinear`, so the model file knows nothing of LoRA.
It returns the `LoraWeights` that hold, for each wrapped linear, the A and B factors of
`max_loras + 1` slots (slot 0: no adapter, always zero). Each step the runner says which
slot each token uses (`set_batch(LoraBatch.from_token_slots(...))`) and every LoraLinear
adds each row's own delta to the base output.

One wrapped linear with n sub-modules (3 for qkv, 2 for gate/up, else 1), R = max_lora_rank
and S slots keeps its factors so that a batch whose largest rank is r reads only the first
r*n rows of a and r rows of b, and nothing of the zero blocks a block-diagonal B would have:
    a: [S, R*n, in]  row i*n + j: row i of sub-module j's lora_A (rank-major)
    b: [S, R, out]   row i: column i of each sub-module's lora_B times its PEFT scale,
                     each in that sub-module's output columns
    h = x @ a[s, :r*n].T;  delta[:, cols_j] = h[:, j::n] @ b[s, :r, cols_j]
for a token using slot s: one matmul for all sub-modules' A, one per sub-module for B.
All slots of all linears live in one slot-major buffer, so a slot is cleared in one op.

The step's tokens are split (`LoraBatch.from_token_slots`, in `lora_batch.py`) into
    segments  long runs of one slot (prefill chunks): one mm, then addmm_ per sub-module;
    padded    the short runs (decodes), grouped by slot and padded to equal length: a
              gather, 1 + n bmm over the slot range and a scatter-add, whatever the number
              of adapters in the step (no gather/scatter when the rows are already in
              order, e.g. decodes sorted by slot with as many tokens per slot).
On a CPU the cost is reading the adapters' weights (each decode-step adapter is used by a
few rows only), so nothing is read that is known to be zero: ranks below max_lora_rank
are cut off per step and B is not block-diagonal.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from tenantserve.engine.config import LoraConfig
from tenantserve.engine.layers.lora_batch import LoraBatch, PaddedRows
from tenantserve.engine.lora_files import LoraAdapterWeights
from tenantserve.engine.models.llama import (
    PACKED_MODULES,
    LlamaConfig,
    LlamaDecoderLayer,
    LlamaForCausalLM,
)
from tenantserve.errors import AdapterError, EngineError

# Wrapped linear -> (block that holds it, the Hugging Face sub-modules it packs, in order).
LORA_LINEARS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "qkv_proj": ("self_attn", PACKED_MODULES["qkv_proj"]),
    "o_proj": ("self_attn", ("o_proj",)),
    "gate_up_proj": ("mlp", PACKED_MODULES["gate_up_proj"]),
    "down_proj": ("mlp", ("down_proj",)),
}


class LoraModulePlan(NamedTuple):
    """What one kind of wrapped linear computes this step (None when it has nothing to do)."""

    num_tokens: int
    # (start, end, slot, rank): rank of the slot's adapter on this linear.
    segments: tuple[tuple[int, int, int, int], ...]
    padded: PaddedRows | None
    padded_rank: int  # largest rank among the padded group's slots


class LoraModuleWeights(NamedTuple):
    """The stacked factors of one wrapped linear (views into the slot-major buffer)."""

    a: torch.Tensor  # [S, R*n, in], rank-major over sub-modules
    b: torch.Tensor  # [S, R, out], PEFT scale folded in
    # Output columns [start, end) of each sub-module, in packing order.
    sub_columns: tuple[tuple[int, int], ...]


class LoraWeights:
    """Device-side A/B factors of every adapter slot, and the current step's plan."""

    def __init__(
        self, model_cfg: LlamaConfig, cfg: LoraConfig, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.model_cfg = model_cfg
        self.max_rank = cfg.max_lora_rank
        self.num_slots = cfg.max_loras + 1
        self.dtype, self.device = dtype, device
        # sub-module -> (kind, index in the kind, first output column)
        self._sub_location: dict[str, tuple[str, int, int]] = {}
        geometry: dict[str, tuple[int, tuple[tuple[int, int], ...]]] = {}  # in, sub columns
        for kind, (_, subs) in LORA_LINEARS.items():
            in_features, out_sizes = _linear_geometry(model_cfg, kind)
            ends = tuple(itertools.accumulate(out_sizes))
            geometry[kind] = (in_features, tuple(zip((0, *ends[:-1]), ends, strict=True)))
            for j, sub in enumerate(subs):
                self._sub_location[sub] = (kind, j, sum(out_sizes[:j]))
        per_layer = sum(
            self.max_rank * (len(cols) * i + cols[-1][1]) for i, cols in geometry.values()
        )
        self._buffer = torch.zeros(
            self.num_slots, per_layer * model_cfg.num_hidden_layers, dtype=dtype, device=device
        )  # [S, all factors of one slot]
        self.modules: list[dict[str, LoraModuleWeights]] = []
        offset = 0
        for _ in range(model_cfg.num_hidden_layers):
            layer: dict[str, LoraModuleWeights] = {}
            for kind, (in_features, sub_columns) in geometry.items():
                rows, out_features = self.max_rank * len(sub_columns), sub_columns[-1][1]
                a = self._view(offset, rows, in_features)
                offset += rows * in_features
                b = self._view(offset, self.max_rank, out_features)
                offset += self.max_rank * out_features
                layer[kind] = LoraModuleWeights(a, b, sub_columns)
            self.modules.append(layer)
        # Per slot: kind -> rank of its adapter there (absent: not targeted).
        self._slot_ranks: list[dict[str, int]] = [{} for _ in range(self.num_slots)]
        self._plans: dict[str, LoraModulePlan] = {}

    def _view(self, offset: int, rows: int, cols: int) -> torch.Tensor:
        return self._buffer[:, offset : offset + rows * cols].view(self.num_slots, rows, cols)

    @property
    def num_bytes(self) -> int:
        """Device memory of all slots."""
        return self._buffer.nbytes

    def load_slot(self, slot: int, adapter: LoraAdapterWeights) -> None:
        """Copy a parsed adapter's host tensors into `slot` (replacing what was there)."""
        self._check_slot(slot)
        if adapter.rank > self.max_rank:
            raise AdapterError(
                f"adapter {adapter.adapter_id} has rank {adapter.rank}, "
                f"above max_lora_rank={self.max_rank}"
            )
        self.clear_slot(slot)
        ranks: dict[str, int] = {}
        with torch.no_grad():
            for (layer, sub), pair in adapter.pairs.items():
                kind, j, col = self._sub_location[sub]
                module = self.modules[layer][kind]
                n = len(module.sub_columns)
                rank, out_features = pair.a.shape[0], pair.b.shape[0]
                module.a[slot, j : rank * n : n].copy_(pair.a, non_blocking=True)
                module.b[slot, :rank, col : col + out_features].copy_(pair.b.T, non_blocking=True)
                ranks[kind] = max(ranks.get(kind, 0), rank)
        self._slot_ranks[slot] = ranks

    def clear_slot(self, slot: int) -> None:
        """Zero `slot`: tokens using it get the base model's output."""
        self._check_slot(slot)
        self._buffer[slot].zero_()
        self._slot_ranks[slot] = {}

    def slot_targets(self, slot: int) -> frozenset[str]:
        """Wrapped linears (qkv_proj, ...) the adapter in `slot` changes."""
        return frozenset(self._slot_ranks[slot])

    def set_batch(self, batch: LoraBatch) -> None:
        """Make `batch` the plan of the next forward passes (until the next set_batch)."""
        self._plans = {}
        if not batch.slots:
            return
        for slot in batch.slots:
            self._check_slot(slot)
            if not self._slot_ranks[slot]:
                raise EngineError(f"LoRA batch uses slot {slot}, which holds no adapter")
        batch = batch.to(self.device)
        for kind in LORA_LINEARS:
            segments = tuple(
                (seg.start, seg.end, seg.slot, rank)
                for seg in batch.segments
                if (rank := self._slot_ranks[seg.slot].get(kind, 0))
            )
            padded, padded_rank = batch.padded, 0
            if padded is not None:
                padded_rank = max(self._slot_ranks[s].get(kind, 0) for s in padded.slots)
                if not padded_rank:
                    padded = None
            if segments or padded is not None:
                self._plans[kind] = LoraModulePlan(batch.num_tokens, segments, padded, padded_rank)

    def set_token_slots(self, token_slots: Sequence[int]) -> None:
        """`set_batch(LoraBatch.from_token_slots(token_slots))`: the runner's per-step call."""
        self.set_batch(LoraBatch.from_token_slots(token_slots))

    def plan(self, kind: str) -> LoraModulePlan | None:
        """This step's work for one kind of wrapped linear; None: no adapter in the step
        targets it."""
        return self._plans.get(kind)

    def _check_slot(self, slot: int) -> None:
        if not 1 <= slot < self.num_slots:
            raise ValueError(f"adapter slot must be in 1..{self.num_slots - 1}, got {slot}")


class LoraLinear(nn.Module):
    """A linear (any module mapping [T, in] -> [T, out]) plus each token's own LoRA delta."""

    MAX_CACHED_VIEWS: ClassVar[int] = 64

    def __init__(self, base: nn.Module, kind: str, weights: LoraWeights, layer: int) -> None:
        super().__init__()
        self.base = base
        self.kind = kind
        self.lora = weights.modules[layer][kind]
        # Not a submodule: the weights are shared by all LoraLinears.
        self._weights = weights
        self._views: dict[tuple[int, int, int], tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """base(x) + delta of each row's adapter; x: [T, in] -> [T, out]."""
        out = self.base(x)  # [T, out]
        plan = self._weights.plan(self.kind)
        if plan is None:
            return out
        if x.shape[0] != plan.num_tokens:
            raise EngineError(
                f"LoRA batch has {plan.num_tokens} tokens, the forward pass {x.shape[0]}; "
                "call LoraWeights.set_batch before each step"
            )
        for start, end, slot, rank in plan.segments:
            self._add_segment(x, out, start, end, slot, rank)
        if plan.padded is not None:
            self._add_padded(x, out, plan.padded, plan.padded_rank)
        return out

    # A is applied transposed (a @ x.T) so that each sub-module's h is a plain strided
    # matrix for the B matmul: h_j = hT.view(rank, n, tokens)[:, j].T, without a copy.

    def _add_segment(
        self, x: torch.Tensor, out: torch.Tensor, start: int, end: int, slot: int, rank: int
    ) -> None:
        a, b, sub_columns = self.lora
        n = len(sub_columns)
        hT = torch.mm(a[slot, : rank * n], x[start:end].T).view(rank, n, -1)  # [rank, n, t]
        rows = out[start:end]
        for j, (c0, c1) in enumerate(sub_columns):
            rows[:, c0:c1].addmm_(hT[:, j].T, b[slot, :rank, c0:c1])

    def _add_padded(self, x: torch.Tensor, out: torch.Tensor, p: PaddedRows, rank: int) -> None:
        a, bs = self._slot_range_views(p.first_slot, p.first_slot + p.num_slots, rank)
        num_slots, num_rows, n = p.num_slots, p.rows_per_slot, len(bs)
        if p.token_range is not None:
            xs = x[p.token_range[0] : p.token_range[1]].view(num_slots, num_rows, -1)
        else:
            xs = x.index_select(0, p.gather_idx).view(num_slots, num_rows, -1)  # [S', L, in]
        hT = torch.bmm(a, xs.transpose(1, 2)).view(num_slots, rank, n, num_rows)
        if n == 1:
            y = torch.bmm(hT[:, :, 0].transpose(1, 2), bs[0])  # [S', L, out]
        else:
            y = out.new_empty(num_slots, num_rows, out.shape[1])
            for j, ((c0, c1), b_j) in enumerate(zip(self.lora.sub_columns, bs, strict=True)):
                y[:, :, c0:c1] = torch.bmm(hT[:, :, j].transpose(1, 2), b_j)
        y = y.view(num_slots * num_rows, -1)
        if p.token_range is not None:
            out[p.token_range[0] : p.token_range[1]].add_(y)
        else:
            out.index_add_(0, p.token_idx, y.index_select(0, p.padded_idx))

    def _slot_range_views(
        self, lo: int, hi: int, rank: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """a[lo:hi, :rank*n] and each sub-module's b[lo:hi, :rank, cols], cached: a steady
        decode batch asks for the same few every step, and slicing is not free."""
        key = (lo, hi, rank)
        views = self._views.get(key)
        if views is None:
            a, b, sub_columns = self.lora
            views = (
                a[lo:hi, : rank * len(sub_columns)],
                tuple(b[lo:hi, :rank, c0:c1] for c0, c1 in sub_columns),
            )
            if len(self._views) >= self.MAX_CACHED_VIEWS:
                self._views.clear()
            self._views[key] = views
        return views


def apply_lora(model: LlamaForCausalLM, cfg: LoraConfig) -> LoraWeights:
    """Wrap the model's LoRA-able linears in place (after its weights are loaded and any
    quantization applied); returns the shared slot weights, all slots empty."""
    param = model.embed_tokens.weight
    weights = LoraWeights(model.config, cfg, dtype=param.dtype, device=param.device)
    for i, layer in enumerate(model.layers):
        assert isinstance(layer, LlamaDecoderLayer)
        blocks: dict[str, nn.Module] = {"self_attn": layer.self_attn, "mlp": layer.mlp}
        for kind, (block_name, _) in LORA_LINEARS.items():
            block = blocks[block_name]
            base = block.get_submodule(kind)
            if isinstance(base, LoraLinear):
                raise ValueError("apply_lora was already applied to this model")
            block.register_module(kind, LoraLinear(base, kind, weights, i))
    return weights


def _linear_geometry(cfg: LlamaConfig, kind: str) -> tuple[int, tuple[int, ...]]:
    """(in_features, output width of each sub-module) of a wrapped linear."""
    if kind in PACKED_MODULES:
        in_features = cfg.hidden_size
        return in_features, cfg.packed_output_sizes(kind)
    if kind == "o_proj":
        return cfg.q_size, (cfg.hidden_size,)
    if kind == "down_proj":
        return cfg.intermediate_size, (cfg.hidden_size,)
    raise KeyError(kind)
