"""LLMEngine end to end on a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch

from tenantserve.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from tenantserve.engine.engine import LLMEngine
from tenantserve.engine.layers.onednn import OneDnnLinear, onednn_available
from tenantserve.engine.request import EngineRequest, FinishReason, RequestOutput, SamplingParams
from tenantserve.errors import InvalidRequestError, PromptTooLongError
from tenantserve.tiers import Tier


@dataclass
class Result:
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    final: RequestOutput | None = None


def run_all(engine: LLMEngine, requests: list[EngineRequest]) -> dict[str, Result]:
    for r in requests:
        engine.add_request(r)
    results: dict[str, Result] = {r.request_id: Result() for r in requests}
    for _ in range(10_000):
        if not engine.has_unfinished_requests():
            break
        for out in engine.step():
            res = results[out.request_id]
            res.tokens.extend(out.new_token_ids)
            res.text += out.text_delta
            if out.finished:
                res.final = out
    return results


def req(rid: str, prompt: list[int], tenant: str = "acme", **sampling: object) -> EngineRequest:
    params = {"max_tokens": 12, "temperature": 0.0, "ignore_eos": True, **sampling}
    return EngineRequest(rid, tuple(prompt), SamplingParams(**params), tenant_id=tenant)  # type: ignore[arg-type]


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 7919 + i * 104729) % 49000 + 10 for i in range(n)]


@pytest.fixture(scope="module")
def config(tiny_model_dir: Path) -> EngineConfig:
    return EngineConfig(
        model_dir=tiny_model_dir,
        cache=CacheConfig(block_size=4, num_blocks=256),
        scheduler=SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=64),
    )


@pytest.fixture
def engine(config: EngineConfig) -> LLMEngine:
    return LLMEngine(config)


def test_batched_outputs_equal_each_request_run_alone(config: EngineConfig) -> None:
    prompts = {f"r{i}": prompt(i, n) for i, n in enumerate([5, 17, 33, 70, 9, 128])}
    alone = {}
    for rid, p in prompts.items():
        alone[rid] = run_all(LLMEngine(config), [req(rid, p)])[rid].tokens
    batched = run_all(LLMEngine(config), [req(rid, p) for rid, p in prompts.items()])
    assert {rid: r.tokens for rid, r in batched.items()} == alone


def test_requests_joining_mid_flight_do_not_change_others_outputs(engine: LLMEngine) -> None:
    a = req("a", prompt(1, 20), max_tokens=20)
    expected = run_all(engine, [a])["a"].tokens
    engine.add_request(replace(a, request_id="a2"))
    tokens: list[int] = []
    for i in range(200):
        if i == 3:
            engine.add_request(req("late", prompt(2, 50)))
        for out in engine.step():
            if out.request_id == "a2":
                tokens.extend(out.new_token_ids)
        if not engine.has_unfinished_requests():
            break
    assert tokens == expected


def test_preemption_under_a_tiny_kv_cache_still_gives_the_same_outputs(
    config: EngineConfig,
) -> None:
    prompts = {f"r{i}": prompt(i, 24) for i in range(6)}
    roomy = run_all(LLMEngine(config), [req(rid, p, max_tokens=16) for rid, p in prompts.items()])
    tight_cfg = replace(config, cache=CacheConfig(block_size=4, num_blocks=24))
    tight = LLMEngine(tight_cfg)
    results = run_all(tight, [req(rid, p, max_tokens=16) for rid, p in prompts.items()])
    assert tight.num_preemptions > 0
    assert {k: r.tokens for k, r in results.items()} == {k: r.tokens for k, r in roomy.items()}
    assert tight.pool.num_used_blocks == 0


def test_second_identical_prompt_of_same_tenant_reports_cached_tokens(engine: LLMEngine) -> None:
    p = prompt(3, 30)
    first = run_all(engine, [req("1", p, tenant="acme")])["1"].final
    second = run_all(engine, [req("2", p, tenant="acme")])["2"].final
    assert first is not None and first.metrics is not None
    assert second is not None and second.metrics is not None
    assert first.metrics.num_cached_tokens == 0
    assert second.metrics.num_cached_tokens == 28  # whole blocks, last token recomputed


def test_same_prompt_from_another_tenant_reports_zero_cached_tokens(engine: LLMEngine) -> None:
    p = prompt(4, 30)
    run_all(engine, [req("1", p, tenant="acme")])
    other = run_all(engine, [req("2", p, tenant="globex")])["2"].final
    assert other is not None and other.metrics is not None
    assert other.metrics.num_cached_tokens == 0


def test_prefix_cache_hit_gives_the_same_tokens_as_a_miss(engine: LLMEngine) -> None:
    p = prompt(5, 41)
    miss = run_all(engine, [req("1", p)])["1"].tokens
    hit = run_all(engine, [req("2", p)])["2"]
    assert hit.final is not None and hit.final.metrics is not None
    assert hit.final.metrics.num_cached_tokens > 0
    assert hit.tokens == miss


def test_block_accounting_returns_to_zero_including_aborted_requests(engine: LLMEngine) -> None:
    for i in range(5):
        engine.add_request(req(f"r{i}", prompt(i, 20 + i), max_tokens=30))
    engine.step()
    engine.step()
    engine.abort_request("r1")
    engine.abort_request("r3")
    finals = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out.finish_reason
    assert finals["r1"] == FinishReason.ABORT and finals["r3"] == FinishReason.ABORT
    assert finals["r0"] == FinishReason.LENGTH
    assert engine.pool.num_used_blocks == 0
    assert engine.stats().num_running == 0


def test_same_seed_gives_the_same_sample(engine: LLMEngine) -> None:
    p = prompt(6, 12)
    kwargs = {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "max_tokens": 16}
    a = run_all(engine, [req("a", p, seed=42, **kwargs)])["a"].tokens
    b = run_all(engine, [req("b", p, seed=42, **kwargs), req("x", prompt(7, 9))])["b"].tokens
    c = run_all(engine, [req("c", p, seed=43, **kwargs)])["c"].tokens
    assert a == b
    assert a != c


def test_stop_string_truncates_the_text_and_finishes_with_stop(engine: LLMEngine) -> None:
    p = prompt(8, 10)
    full = run_all(engine, [req("full", p, max_tokens=24)])["full"].text
    assert len(full) > 12
    stop = full[6:10]
    cut = run_all(engine, [req("cut", p, max_tokens=24, stop=(stop,))])["cut"]
    assert cut.final is not None
    assert cut.final.finish_reason == FinishReason.STOP
    assert cut.text == full[: full.index(stop)]


def test_stop_token_id_finishes_with_stop(engine: LLMEngine) -> None:
    p = prompt(9, 10)
    full = run_all(engine, [req("full", p, max_tokens=10)])["full"].tokens
    stop_id = full[4]
    cut = run_all(engine, [req("cut", p, max_tokens=10, stop_token_ids=(stop_id,))])["cut"]
    assert cut.final is not None and cut.final.finish_reason == FinishReason.STOP
    assert cut.tokens == full[: full.index(stop_id) + 1]


def test_final_output_reports_tokens_and_timings(engine: LLMEngine) -> None:
    r = run_all(engine, [req("m", prompt(10, 15), max_tokens=5)])["m"]
    assert r.final is not None and r.final.metrics is not None
    m = r.final.metrics
    assert (m.num_prompt_tokens, m.num_completion_tokens) == (15, 5)
    assert m.ttft_s is not None and m.ttft_s >= m.queue_time_s >= 0
    assert m.engine_time_s > 0
    assert r.final.finish_reason == FinishReason.LENGTH


@pytest.mark.parametrize(
    ("prompt_ids", "max_tokens", "error", "words"),
    [
        ([], 4, InvalidRequestError, "empty"),
        ([1, 2, 999_999], 4, InvalidRequestError, "token ids"),
        (list(range(10, 1010)), 100, PromptTooLongError, "maximum context length"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error_and_engine_keeps_serving(
    engine: LLMEngine, prompt_ids: list[int], max_tokens: int, error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        engine.add_request(req("bad", prompt_ids, max_tokens=max_tokens))
    ok = run_all(engine, [req("ok", prompt(11, 8), max_tokens=3)])["ok"]
    assert len(ok.tokens) == 3


def test_tier_is_carried_into_scheduling_order(config: EngineConfig) -> None:
    engine = LLMEngine(replace(config, scheduler=SchedulerConfig(max_num_batched_tokens=32)))
    free = replace(req("free", prompt(12, 32)), tier=Tier.FREE)
    premium = replace(req("premium", prompt(13, 32)), tier=Tier.PREMIUM)
    engine.add_request(free)
    engine.add_request(premium)
    first = engine.step()
    assert [o.request_id for o in first] == ["premium"]


@pytest.mark.slow
def test_smollm2_greedy_chat_equals_transformers(smollm2_dir: Path) -> None:
    """The real model through the whole engine (packed GEMMs, decode kernel, batching)."""
    import torch
    from transformers import AutoModelForCausalLM

    engine = LLMEngine(EngineConfig(model_dir=smollm2_dir, cache=CacheConfig(num_blocks=128)))
    questions = ["What is the capital of France?", "Name three colors.", "What is 2+2?"]
    prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": q}]) for q in questions]
    ours = run_all(
        engine, [req(f"q{i}", p, max_tokens=24, ignore_eos=False) for i, p in enumerate(prompts)]
    )
    hf = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    for i, p in enumerate(prompts):
        out = hf.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False)
        expected = out[0, len(p) :].tolist()
        assert ours[f"q{i}"].tokens == expected[: len(ours[f"q{i}"].tokens)]
        assert len(ours[f"q{i}"].tokens) == len(expected)
    assert "Paris" in ours["q0"].text


def test_sdpa_and_kernel_decode_attention_give_the_same_tokens(config: EngineConfig) -> None:
    prompts = {f"r{i}": prompt(i, n) for i, n in enumerate([3, 18, 40, 65])}
    outs = {}
    for backend in ("sdpa", "kernel"):
        engine = LLMEngine(replace(config, decode_attention=backend))
        results = run_all(engine, [req(rid, p, max_tokens=20) for rid, p in prompts.items()])
        outs[backend] = {rid: r.tokens for rid, r in results.items()}
    assert outs["sdpa"] == outs["kernel"]


def test_a_bf16_engine_serves_on_any_cpu(config: EngineConfig) -> None:
    """bf16 weights: packed for oneDNN where the CPU has bf16 GEMMs, plain linears where
    it has not (an AVX2-only CPU); batched outputs equal solo ones either way."""
    bf16 = replace(config, quantization="bf16")
    engine = LLMEngine(bf16)
    packed = any(isinstance(m, OneDnnLinear) for m in engine.model.modules())
    assert packed is onednn_available(torch.device("cpu"), torch.bfloat16)
    prompts = {f"b{i}": prompt(i, n) for i, n in enumerate([5, 40])}
    alone = {rid: run_all(LLMEngine(bf16), [req(rid, p)])[rid].tokens for rid, p in prompts.items()}
    batched = run_all(engine, [req(rid, p) for rid, p in prompts.items()])
    assert {rid: r.tokens for rid, r in batched.items()} == alone
