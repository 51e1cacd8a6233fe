"""Build paged-attention inputs by hand, the way the runner lays out a step.

Each sequence owns consecutive blocks; a token at position p lives in slot
`block_ids[p // block_size] * block_size + p % block_size`. A step puts every decode
token first (one per sequence), then each prefill chunk as one contiguous span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tenantserve.engine.layers.attention import (
    AttentionMetadata,
    KVCache,
    PrefillSpan,
    causal_mask_with_context,
)
from tenantserve.engine.models.llama import LlamaConfig, LlamaForCausalLM


@dataclass
class PagedSequence:
    """A sequence's blocks and how many of its tokens already have K/V in the cache."""

    block_ids: list[int]
    num_cached_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StepInput:
    """What the model's forward takes for one step."""

    input_ids: torch.Tensor  # [T] long
    positions: torch.Tensor  # [T] long
    meta: AttentionMetadata


def make_kv_caches(
    cfg: LlamaConfig,
    num_blocks: int,
    block_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[KVCache]:
    """One zeroed KVCache per layer."""
    return [
        KVCache(
            num_blocks,
            block_size,
            cfg.num_key_value_heads,
            cfg.head_dim,
            dtype,
            torch.device(device),
        )
        for _ in range(cfg.num_hidden_layers)
    ]


def allocate_sequences(max_lengths: Sequence[int], block_size: int) -> list[PagedSequence]:
    """Consecutive blocks for each sequence, enough for `max_lengths[i]` tokens; block 0 first."""
    seqs, next_block = [], 0
    for length in max_lengths:
        n = -(-length // block_size)
        seqs.append(PagedSequence(block_ids=list(range(next_block, next_block + n))))
        next_block += n
    return seqs


def build_step(
    block_size: int,
    decodes: Sequence[tuple[PagedSequence, int]] = (),
    prefills: Sequence[tuple[PagedSequence, Sequence[int]]] = (),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> StepInput:
    """A step of decode tokens then prefill chunks; advances each sequence's num_cached_tokens.

    `decodes`: (sequence, its next token id); `prefills`: (sequence, the chunk's token ids),
    continuing after the sequence's cached tokens (chunked prefill when that is > 0).
    """
    dev = torch.device(device)
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []

    def add(seq: PagedSequence, token_ids: Sequence[int]) -> None:
        for i, tok in enumerate(token_ids):
            pos = seq.num_cached_tokens + i
            ids.append(tok)
            positions.append(pos)
            slots.append(seq.block_ids[pos // block_size] * block_size + pos % block_size)

    decode_block_table = decode_mask = None
    if decodes:
        max_blocks = max(len(seq.block_ids) for seq, _ in decodes)
        table = torch.zeros(len(decodes), max_blocks, dtype=torch.long)
        mask = torch.full((len(decodes), 1, 1, max_blocks * block_size), float("-inf"))
        for row, (seq, tok) in enumerate(decodes):
            add(seq, [tok])
            table[row, : len(seq.block_ids)] = torch.tensor(seq.block_ids)
            mask[row, ..., : seq.num_cached_tokens + 1] = 0.0  # itself and everything before
        decode_block_table, decode_mask = table.to(dev), mask.to(device=dev, dtype=dtype)

    spans = []
    for seq, chunk in prefills:
        start = len(ids)
        add(seq, chunk)
        context = seq.num_cached_tokens
        num_blocks = -(-(context + len(chunk)) // block_size)
        spans.append(
            PrefillSpan(
                start=start,
                end=len(ids),
                num_context_tokens=context,
                block_ids=torch.tensor(seq.block_ids[:num_blocks], dtype=torch.long, device=dev),
                mask=None
                if context == 0
                else causal_mask_with_context(context, len(chunk), dtype, dev),
            )
        )

    for seq, tok in decodes:
        seq.num_cached_tokens += 1
        seq.token_ids.append(tok)
    for seq, chunk in prefills:
        seq.num_cached_tokens += len(chunk)
        seq.token_ids.extend(chunk)

    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
        num_decode_tokens=len(decodes),
        decode_block_table=decode_block_table,
        decode_mask=decode_mask,
        prefills=tuple(spans),
    )
    return StepInput(
        input_ids=torch.tensor(ids, dtype=torch.long, device=dev),
        positions=torch.tensor(positions, dtype=torch.long, device=dev),
        meta=meta,
    )


@torch.no_grad()
def run_step(model: LlamaForCausalLM, caches: list[KVCache], step: StepInput) -> torch.Tensor:
    """Logits [T, vocab] for every token of the step (writes their K/V into `caches`)."""
    hidden = model(step.input_ids, step.positions, caches, step.meta)
    return model.compute_logits(hidden)
