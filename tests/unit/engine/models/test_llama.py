"""Our paged forward pass equals the transformers reference model on the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tenantserve.engine.models.checkpoint import load_model
from tenantserve.engine.models.llama import LlamaForCausalLM
from tests.helpers.attention import (
    allocate_sequences,
    build_step,
    make_kv_caches,
    run_step,
)

BLOCK_SIZE = 4
PROMPTS = [
    [1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198, 57, 58],
    [1, 9690, 198, 2683, 359, 253],
    [17, 300, 5000, 12, 49151, 3, 99, 1000, 2048, 7, 8],
]


class ReferenceModel:
    """The transformers model: logits for every position of a full sequence."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    @torch.no_grad()
    def logits(self, token_ids: list[int]) -> torch.Tensor:
        return self.model(torch.tensor([token_ids])).logits[0].float()  # [S, vocab]


def _prefill_then_decode(
    ours: LlamaForCausalLM, ref: ReferenceModel, atol: float, rtol: float
) -> None:
    seqs = allocate_sequences([len(p) + 1 for p in PROMPTS], BLOCK_SIZE)
    caches = make_kv_caches(ours.config, sum(len(s.block_ids) for s in seqs), BLOCK_SIZE)

    # Prefill: every prompt in one step, from an empty cache.
    step = build_step(BLOCK_SIZE, prefills=list(zip(seqs, PROMPTS, strict=True)))
    logits = run_step(ours, caches, step)
    for span, prompt in zip(step.meta.prefills, PROMPTS, strict=True):
        torch.testing.assert_close(
            logits[span.start : span.end], ref.logits(prompt), atol=atol, rtol=rtol
        )

    # One decode step for all sequences at once, each with its greedy next token.
    next_tokens = [int(logits[span.end - 1].argmax()) for span in step.meta.prefills]
    step = build_step(BLOCK_SIZE, decodes=list(zip(seqs, next_tokens, strict=True)))
    logits = run_step(ours, caches, step)
    for row, seq in enumerate(seqs):
        torch.testing.assert_close(logits[row], ref.logits(seq.token_ids)[-1], atol=atol, rtol=rtol)


def _chunked_prefill_beside_decodes(
    ours: LlamaForCausalLM, ref: ReferenceModel, atol: float, rtol: float
) -> None:
    long_prompt, short_prompt = PROMPTS[0], PROMPTS[1]
    chunked, decoding = allocate_sequences([len(long_prompt), len(short_prompt) + 1], BLOCK_SIZE)
    caches = make_kv_caches(
        ours.config, len(chunked.block_ids) + len(decoding.block_ids), BLOCK_SIZE
    )
    split = 5  # not a block boundary: the second chunk starts mid-block

    step = build_step(
        BLOCK_SIZE, prefills=[(chunked, long_prompt[:split]), (decoding, short_prompt)]
    )
    logits = run_step(ours, caches, step)
    torch.testing.assert_close(
        logits[: step.meta.prefills[0].end], ref.logits(long_prompt[:split]), atol=atol, rtol=rtol
    )

    # A mixed step: one decode token first, then the rest of the long prompt on top of its context.
    next_token = int(logits[step.meta.prefills[1].end - 1].argmax())
    step = build_step(
        BLOCK_SIZE, decodes=[(decoding, next_token)], prefills=[(chunked, long_prompt[split:])]
    )
    assert step.meta.prefills[0].num_context_tokens == split
    logits = run_step(ours, caches, step)
    torch.testing.assert_close(logits[0], ref.logits(decoding.token_ids)[-1], atol=atol, rtol=rtol)
    torch.testing.assert_close(logits[1:], ref.logits(long_prompt)[split:], atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir: Path) -> tuple[LlamaForCausalLM, ReferenceModel]:
    return load_model(tiny_model_dir), ReferenceModel(tiny_model_dir)


@pytest.fixture(scope="module")
def smollm2_pair(smollm2_dir: Path) -> tuple[LlamaForCausalLM, ReferenceModel]:
    return load_model(smollm2_dir), ReferenceModel(smollm2_dir)


def test_tiny_prefill_and_decode_match_transformers(
    tiny_pair: tuple[LlamaForCausalLM, ReferenceModel],
) -> None:
    _prefill_then_decode(*tiny_pair, atol=1e-4, rtol=1e-4)


def test_tiny_chunked_prefill_beside_a_decode_matches_transformers(
    tiny_pair: tuple[LlamaForCausalLM, ReferenceModel],
) -> None:
    _chunked_prefill_beside_decodes(*tiny_pair, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_prefill_and_decode_match_transformers(
    smollm2_pair: tuple[LlamaForCausalLM, ReferenceModel],
) -> None:
    _prefill_then_decode(*smollm2_pair, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
def test_smollm2_chunked_prefill_beside_a_decode_matches_transformers(
    smollm2_pair: tuple[LlamaForCausalLM, ReferenceModel],
) -> None:
    _chunked_prefill_beside_decodes(*smollm2_pair, atol=1e-3, rtol=1e-3)
