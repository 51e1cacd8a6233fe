"""Paged attention over a block-table KV cache, for a step that mixes decodes and prefill chunks.

Token order inside a step is fixed by the runner: all decode tokens first (one per
sequence), then each prefill chunk as a contiguous span.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tenantserve.engine.layers.decode_kernel import DecodeKernel


@dataclass(frozen=True)
class PrefillSpan:
    """One sequence's prefill chunk: tokens [start, end) of the step."""

    start: int
    end: int
    # Tokens of this sequence already in the cache before this chunk.
    num_context_tokens: int
    # Blocks covering context + chunk, in order.
    block_ids: torch.Tensor  # [nb] long
    # Additive mask [C, L] (bottom-right causal) when num_context_tokens > 0, else None.
    mask: torch.Tensor | None


@dataclass(frozen=True)
class AttentionMetadata:
    """Where this step's K/V go and what each query attends to; shared by all layers."""

    slot_mapping: torch.Tensor  # [T] long: block_id * block_size + offset of each new token
    num_decode_tokens: int
    decode_block_table: torch.Tensor | None  # [Bd, max_blocks] long
    decode_mask: torch.Tensor | None  # [Bd, 1, 1, max_blocks * block_size] additive (0 / -inf)
    prefills: tuple[PrefillSpan, ...]
    decode_context_lens: torch.Tensor | None = None  # [Bd] long, with the step's token
    # The C++ kernel reading K/V in place (then decode_mask is None), or None for SDPA.
    decode_kernel: DecodeKernel | None = None


class KVCache:
    """One layer's K and V blocks: [num_blocks, block_size, num_kv_heads, head_dim] each."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def write(self, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new tokens' k, v ([T, Hkv, D]) at their slots."""
        num_kv_heads, head_dim = self.k.shape[2], self.k.shape[3]
        self.k.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, k)
        self.v.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v)

    def gather(self, block_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of the given blocks, flattened: [..., nb * block_size, Hkv, D]."""
        shape = (*block_ids.shape[:-1], -1, self.k.shape[2], self.k.shape[3])
        flat = block_ids.reshape(-1)
        k = self.k.index_select(0, flat).view(shape)
        v = self.v.index_select(0, flat).view(shape)
        return k, v


def paged_attention(
    q: torch.Tensor,  # [T, Hq, D]
    k: torch.Tensor,  # [T, Hkv, D] (this step's new tokens, already written to the cache)
    v: torch.Tensor,  # [T, Hkv, D]
    cache: KVCache,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Attention output [T, Hq, D] for every token of the step. Does not modify the cache."""
    _, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    group = num_heads // num_kv_heads
    out = torch.empty_like(q)
    nd = meta.num_decode_tokens
    if nd and meta.decode_kernel is not None:
        assert meta.decode_block_table is not None and meta.decode_context_lens is not None
        out[:nd] = meta.decode_kernel(
            q[:nd], cache.k, cache.v, meta.decode_block_table, meta.decode_context_lens, scale
        )
    elif nd:
        assert meta.decode_block_table is not None and meta.decode_mask is not None
        kd, vd = cache.gather(meta.decode_block_table)  # [Bd, S, Hkv, D]
        # Grouped-query attention without repeating K/V: the query heads sharing a KV
        # head become that head's "query positions".
        qd = q[:nd].view(nd, num_kv_heads, group, head_dim)  # [Bd, Hkv, G, D]
        od = F.scaled_dot_product_attention(
            qd, kd.transpose(1, 2), vd.transpose(1, 2), attn_mask=meta.decode_mask, scale=scale
        )  # [Bd, Hkv, G, D]
        out[:nd] = od.reshape(nd, num_heads, head_dim)
    for span in meta.prefills:
        qp = q[span.start : span.end].transpose(0, 1).unsqueeze(0)  # [1, Hq, C, D]
        if span.num_context_tokens == 0:
            kp = k[span.start : span.end].transpose(0, 1).unsqueeze(0)  # [1, Hkv, C, D]
            vp = v[span.start : span.end].transpose(0, 1).unsqueeze(0)
            op = F.scaled_dot_product_attention(
                qp, kp, vp, is_causal=True, scale=scale, enable_gqa=True
            )
        else:
            length = span.num_context_tokens + (span.end - span.start)
            kc, vc = cache.gather(span.block_ids)  # [nb * bs, Hkv, D]
            kp = kc[:length].transpose(0, 1).unsqueeze(0)  # [1, Hkv, L, D]
            vp = vc[:length].transpose(0, 1).unsqueeze(0)
            op = F.scaled_dot_product_attention(
                qp, kp, vp, attn_mask=span.mask, scale=scale, enable_gqa=True
            )
        out[span.start : span.end] = op.squeeze(0).transpose(0, 1)
    return out


def causal_mask_with_context(
    num_context_tokens: int, num_new_tokens: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive mask [C, L]: new token i (at position context+i) sees keys 0..context+i."""
    length = num_context_tokens + num_new_tokens
    q_pos = torch.arange(num_new_tokens, device=device)[:, None] + num_context_tokens
    k_pos = torch.arange(length, device=device)[None, :]
    mask = torch.zeros(num_new_tokens, length, dtype=dtype, device=device)
    return mask.masked_fill_(k_pos > q_pos, float("-inf"))
