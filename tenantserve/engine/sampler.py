"""Token selection from logits: greedy, temperature, top-k, top-p, per-request seeds."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tenantserve.engine.request import SamplingParams


class Sampler:
    """Picks one token per row. Rows with a seed use their own generator, so a seeded
    request gives the same tokens whatever else shares its batch."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(seed)

    def sample(
        self,
        logits: torch.Tensor,  # [N, V] float32
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
    ) -> list[int]:
        """One token id per row."""
        tokens = torch.argmax(logits, dim=-1)  # [N]; kept for greedy rows
        for i, p in enumerate(params):
            if p.greedy:
                continue
            tokens[i] = self._sample_row(logits[i], p, generators[i] or self._generator)
        return tokens.tolist()

    @staticmethod
    def _sample_row(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator) -> torch.Tensor:
        logits = logits / p.temperature  # [V]
        if p.top_k and p.top_k < logits.shape[-1]:
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
            # Keep the smallest prefix whose mass reaches top_p (always the first token:
            # a top_p below float32's range compares as 0, which would drop every token).
            drop = cum - torch.softmax(sorted_logits, dim=-1) >= p.top_p
            drop[0] = False
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.empty_like(logits).scatter_(0, order, sorted_logits)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=gen)[0]
