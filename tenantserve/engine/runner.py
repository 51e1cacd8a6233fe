"""Runs one planned step on the model: builds the step's tensors, forwards, samples.

Token order inside a step: decode tokens first, then prefill chunks; within each group,
sequences are ordered by LoRA slot so that rows of one adapter are contiguous.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Protocol

import torch

from tenantserve.engine.layers.attention import (
    AttentionMetadata,
    KVCache,
    PrefillSpan,
    causal_mask_with_context,
)
from tenantserve.engine.layers.decode_kernel import DecodeKernel
from tenantserve.engine.models.llama import LlamaForCausalLM
from tenantserve.engine.sampler import Sampler
from tenantserve.engine.scheduler import ScheduledSeq, SchedulerOutput


class LoraBatchSink(Protocol):
    """What the runner needs of the LoRA weights: the slot of every token of the step."""

    def set_token_slots(self, token_slots: Seq[int]) -> None: ...


@dataclass(frozen=True)
class StepInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: AttentionMetadata
    token_slots: list[int]  # LoRA slot per token (0: base)
    sample_rows: torch.Tensor  # [N] rows of the step whose logits are sampled
    sample_items: list[ScheduledSeq]  # the sequence of each sampled row


class ModelRunner:
    """Owns the model and its KV cache; `run(plan)` returns the sampled token per request."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        sampler: Sampler,
        lora: LoraBatchSink | None = None,
        decode_kernel: DecodeKernel | None = None,
    ) -> None:
        cfg = model.config
        self.model = model
        self.block_size = block_size
        self.device = device
        self.sampler = sampler
        self.lora = lora
        self.decode_kernel = decode_kernel
        dtype = next(model.parameters()).dtype
        self.caches = [
            KVCache(num_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim, dtype, device)
            for _ in range(cfg.num_hidden_layers)
        ]
        self.dtype = dtype

    @staticmethod
    def kv_bytes_per_block(model: LlamaForCausalLM, block_size: int, dtype: torch.dtype) -> int:
        cfg = model.config
        elem = torch.empty((), dtype=dtype).element_size()
        return (
            2 * cfg.num_hidden_layers * block_size * cfg.num_key_value_heads * cfg.head_dim * elem
        )

    @torch.inference_mode()
    def run(self, plan: SchedulerOutput, generators: dict[str, torch.Generator]) -> dict[str, int]:
        """Forward the planned tokens (writing their K/V) and sample the next token of
        every sequence whose known tokens are now all computed."""
        inputs = self.prepare(plan)
        if self.lora is not None:
            self.lora.set_token_slots(inputs.token_slots)
        hidden = self.model(inputs.input_ids, inputs.positions, self.caches, inputs.meta)
        if not inputs.sample_items:
            return {}
        logits = self.model.compute_logits(hidden.index_select(0, inputs.sample_rows))
        params = [item.seq.request.sampling for item in inputs.sample_items]
        gens = [generators.get(item.seq.request_id) for item in inputs.sample_items]
        tokens = self.sampler.sample(logits, params, gens)
        return {
            item.seq.request_id: tok for item, tok in zip(inputs.sample_items, tokens, strict=True)
        }

    def prepare(self, plan: SchedulerOutput) -> StepInputs:
        """Host-side bookkeeping: ids, positions, cache slots, block tables, masks."""
        bs = self.block_size
        decodes = sorted(plan.decodes, key=lambda s: s.seq.lora_slot)
        prefills = sorted(plan.prefills, key=lambda s: s.seq.lora_slot)
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        token_slots: list[int] = []
        sample_rows: list[int] = []
        sample_items: list[ScheduledSeq] = []

        lengths = [item.seq.num_computed_tokens + 1 for item in decodes]
        for item in decodes:
            seq = item.seq
            pos = seq.num_computed_tokens
            sample_rows.append(len(input_ids))
            sample_items.append(item)
            input_ids.append(seq.token_ids[pos])
            positions.append(pos)
            slots.append(seq.block_ids[pos // bs] * bs + pos % bs)
            token_slots.append(seq.lora_slot)

        decode_table = decode_mask = context_lens = None
        if decodes:
            # A decoding sequence's blocks cover exactly its tokens, this step's included.
            max_blocks = max(len(item.seq.block_ids) for item in decodes)
            table = [
                item.seq.block_ids + [0] * (max_blocks - len(item.seq.block_ids))
                for item in decodes
            ]
            decode_table = torch.tensor(table, dtype=torch.long, device=self.device)
            context_lens = torch.tensor(lengths, dtype=torch.long, device=self.device)
            if self.decode_kernel is None:  # SDPA over the padded gather needs a mask
                span = torch.arange(max_blocks * bs, device=self.device)
                decode_mask = torch.zeros(
                    len(decodes), max_blocks * bs, dtype=self.dtype, device=self.device
                )
                decode_mask.masked_fill_(span[None, :] >= context_lens[:, None], float("-inf"))
                decode_mask = decode_mask.view(len(decodes), 1, 1, -1)

        spans: list[PrefillSpan] = []
        for item in prefills:
            seq = item.seq
            start, ctx, n = len(input_ids), seq.num_computed_tokens, item.num_new_tokens
            input_ids.extend(seq.token_ids[ctx : ctx + n])
            positions.extend(range(ctx, ctx + n))
            slots.extend(seq.block_ids[p // bs] * bs + p % bs for p in range(ctx, ctx + n))
            token_slots.extend([seq.lora_slot] * n)
            num_blocks = -(-(ctx + n) // bs)
            mask = causal_mask_with_context(ctx, n, self.dtype, self.device) if ctx > 0 else None
            block_ids = torch.tensor(
                seq.block_ids[:num_blocks], dtype=torch.long, device=self.device
            )
            spans.append(PrefillSpan(start, start + n, ctx, block_ids, mask))
            if item.samples:
                sample_rows.append(start + n - 1)
                sample_items.append(item)

        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=self.device),
            num_decode_tokens=len(decodes),
            decode_block_table=decode_table,
            decode_mask=decode_mask,
            prefills=tuple(spans),
            decode_context_lens=context_lens,
            decode_kernel=self.decode_kernel,
        )
        return StepInputs(
            input_ids=torch.tensor(input_ids, dtype=torch.long, device=self.device),
            positions=torch.tensor(positions, dtype=torch.long, device=self.device),
            meta=meta,
            token_slots=token_slots,
            sample_rows=torch.tensor(sample_rows, dtype=torch.long, device=self.device),
            sample_items=sample_items,
        )
