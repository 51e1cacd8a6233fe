"""Multi-LoRA through the whole engine: mixed batches, adapter tiers, isolation, bad adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from tenantserve.engine.config import CacheConfig, EngineConfig, LoraConfig, SchedulerConfig
from tenantserve.engine.engine import LLMEngine
from tenantserve.engine.request import (
    EngineRequest,
    FinishReason,
    LoraRef,
    RequestOutput,
    SamplingParams,
)
from tenantserve.errors import AdapterError
from tests.helpers.lora import write_random_adapter

ADAPTERS = [(8, "all-linear"), (4, ["q_proj", "v_proj"]), (16, ["k_proj", "o_proj", "down_proj"])]


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [
        write_random_adapter(tiny_model_dir, root / f"a{i}", rank, targets, seed=i, b_std=0.5)
        for i, (rank, targets) in enumerate(ADAPTERS)
    ]


def engine_config(model_dir: Path, max_loras: int = 4) -> EngineConfig:
    return EngineConfig(
        model_dir=model_dir,
        cache=CacheConfig(block_size=4, num_blocks=256),
        scheduler=SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=64),
        lora=LoraConfig(max_loras=max_loras, max_cpu_loras=4, max_lora_rank=16),
    )


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 7919 + i * 104729) % 49000 + 10 for i in range(n)]


def run(engine: LLMEngine, reqs: list[EngineRequest]) -> dict[str, list[RequestOutput]]:
    for r in reqs:
        engine.add_request(r)
    outs: dict[str, list[RequestOutput]] = {r.request_id: [] for r in reqs}
    for _ in range(5000):
        if not engine.has_unfinished_requests():
            break
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
    return outs


def tokens(outs: list[RequestOutput]) -> list[int]:
    return [t for o in outs for t in o.new_token_ids]


def request(rid: str, p: list[int], lora: LoraRef | None, tenant: str = "acme") -> EngineRequest:
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    return EngineRequest(rid, tuple(p), params, tenant_id=tenant, lora=lora)


def reference_greedy(model_dir: Path, adapter: Path | None, p: list[int], n: int) -> list[int]:
    """Independent path: transformers, adapter merged into the weights by peft."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = model.eval().generate(
        torch.tensor([p]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0
    )
    return out[0, len(p) :].tolist()


def test_mixed_batch_of_base_and_three_adapters_matches_merged_references(
    tiny_model_dir: Path, adapter_dirs: list[Path]
) -> None:
    refs = [None, *(LoraRef(f"ad{i}", str(d)) for i, d in enumerate(adapter_dirs))]
    prompts = [prompt(i, n) for i, n in enumerate([7, 19, 30, 12])]
    engine = LLMEngine(engine_config(tiny_model_dir))
    outs = run(
        engine,
        [request(f"r{i}", p, ref) for i, (p, ref) in enumerate(zip(prompts, refs, strict=True))],
    )
    for i, p in enumerate(prompts):
        adapter = adapter_dirs[i - 1] if i else None
        assert tokens(outs[f"r{i}"]) == reference_greedy(tiny_model_dir, adapter, p, 8), i
    assert engine.pool.num_used_blocks == 0


def test_more_adapters_than_slots_are_cycled_through_and_still_correct(
    tiny_model_dir: Path, adapter_dirs: list[Path]
) -> None:
    engine = LLMEngine(engine_config(tiny_model_dir, max_loras=1))
    refs = [LoraRef(f"ad{i}", str(d)) for i, d in enumerate(adapter_dirs)]
    p = prompt(5, 10)
    outs = run(engine, [request(f"r{i}", p, ref) for i, ref in enumerate(refs)])
    for i, d in enumerate(adapter_dirs):
        assert tokens(outs[f"r{i}"]) == reference_greedy(tiny_model_dir, d, p, 8)
    stats = engine.stats().adapters
    assert stats is not None and stats.num_disk_loads == 3 and stats.num_active == 1


def test_same_prompt_with_another_adapter_reports_zero_cached_tokens(
    tiny_model_dir: Path, adapter_dirs: list[Path]
) -> None:
    engine = LLMEngine(engine_config(tiny_model_dir))
    p = prompt(6, 30)
    a = LoraRef("ad0", str(adapter_dirs[0]))
    b = LoraRef("ad1", str(adapter_dirs[1]))
    run(engine, [request("first", p, a)])
    same = run(engine, [request("same", p, a)])["same"][-1].metrics
    other = run(engine, [request("other", p, b)])["other"][-1].metrics
    base = run(engine, [request("base", p, None)])["base"][-1].metrics
    assert same is not None and same.num_cached_tokens == 28
    assert other is not None and other.num_cached_tokens == 0
    assert base is not None and base.num_cached_tokens == 0


def test_cold_adapter_loads_while_other_requests_keep_decoding(
    tiny_model_dir: Path, adapter_dirs: list[Path]
) -> None:
    engine = LLMEngine(engine_config(tiny_model_dir))
    engine.add_request(request("base", prompt(7, 8), None))
    engine.step()
    engine.add_request(request("lora", prompt(8, 8), LoraRef("ad2", str(adapter_dirs[2]))))
    produced = [o.request_id for o in engine.step()]
    # The adapter's load happens on a loader thread; the base request is served meanwhile.
    assert "base" in produced
    outs = run(engine, [])
    assert outs["lora"][-1].finish_reason == FinishReason.LENGTH
    assert engine.stats().num_running == 0


def test_unknown_adapter_is_rejected_at_admission(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = LLMEngine(engine_config(tiny_model_dir))
    with pytest.raises(AdapterError, match="does-not-exist"):
        engine.add_request(
            request("x", prompt(1, 5), LoraRef("x", str(tmp_path / "does-not-exist")))
        )


def test_rank_above_max_is_rejected_with_the_rank_named(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    big = write_random_adapter(tiny_model_dir, tmp_path / "big", 32, ["q_proj"], seed=1)
    engine = LLMEngine(engine_config(tiny_model_dir))
    with pytest.raises(AdapterError, match="32"):
        engine.add_request(request("x", prompt(1, 5), LoraRef("big", str(big))))


def test_nan_weights_end_only_that_request_with_an_error(
    tiny_model_dir: Path, adapter_dirs: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "nan"
    bad.mkdir()
    (bad / "adapter_config.json").write_text((adapter_dirs[1] / "adapter_config.json").read_text())
    tensors = load_file(str(adapter_dirs[1] / "adapter_model.safetensors"))
    first = sorted(tensors)[0]
    tensors[first][0, 0] = float("nan")
    save_file(tensors, str(bad / "adapter_model.safetensors"))
    engine = LLMEngine(engine_config(tiny_model_dir))
    outs = run(
        engine,
        [request("bad", prompt(1, 5), LoraRef("nan", str(bad))), request("ok", prompt(2, 5), None)],
    )
    final = outs["bad"][-1]
    assert final.finish_reason == FinishReason.ERROR
    assert final.error is not None and "NaN" in final.error
    assert len(tokens(outs["ok"])) == 8
