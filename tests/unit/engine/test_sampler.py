"""Sampler and SamplingParams edge cases found by the security fuzzing (issue 6): values the
API accepts must never make the engine process raise."""

from __future__ import annotations

import pytest
import torch

from tenantserve.engine.request import MAX_SEED, MIN_SEED, SamplingParams
from tenantserve.engine.sampler import Sampler
from tenantserve.errors import InvalidRequestError


@pytest.mark.parametrize("temperature", [5e-324, 1e-40, 1e-6])
def test_a_vanishing_temperature_samples_greedily_instead_of_dividing_by_it(
    temperature: float,
) -> None:
    # 5e-324 (a denormal the API accepts as in [0, 2]) once overflowed the logits to inf:
    # softmax -> NaN -> torch.multinomial raised and took the engine process down.
    logits = torch.randn(3, 64, generator=torch.Generator().manual_seed(0)) * 5
    params = SamplingParams(temperature=temperature, top_p=0.5, top_k=10)
    assert params.greedy
    tokens = Sampler(0, torch.device("cpu")).sample(logits, [params] * 3, [None] * 3)
    assert tokens == torch.argmax(logits, dim=-1).tolist()


def test_a_small_but_real_temperature_still_samples() -> None:
    assert not SamplingParams(temperature=1e-3).greedy


@pytest.mark.parametrize("seed", [MAX_SEED + 1, MIN_SEED - 1, 10**30])
def test_a_seed_a_torch_generator_cannot_take_is_refused(seed: int) -> None:
    # Once a RuntimeError in the engine process's add_request: the engine restarted.
    with pytest.raises(InvalidRequestError, match="seed"):
        SamplingParams(seed=seed)
    for ok in (MIN_SEED, MAX_SEED):
        torch.Generator().manual_seed(SamplingParams(seed=ok).seed or 0)


@pytest.mark.parametrize("top_p", [5e-324, 1e-46, 1e-9])
def test_a_vanishing_top_p_keeps_the_most_likely_token(top_p: float) -> None:
    # 5e-324 became 0 in float32: every token was dropped, softmax gave NaN, and the
    # engine process died (found by the security fuzzing).
    logits = torch.randn(2, 64, generator=torch.Generator().manual_seed(1)) * 5
    params = SamplingParams(temperature=1.0, top_p=top_p)
    tokens = Sampler(0, torch.device("cpu")).sample(logits, [params] * 2, [None] * 2)
    assert tokens == torch.argmax(logits, dim=-1).tolist()
