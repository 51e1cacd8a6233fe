"""Batched multi-LoRA: a mixed batch equals each request run alone with its adapter merged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM as HFLlamaForCausalLM

from tenantserve.engine.config import LoraConfig
from tenantserve.engine.layers.lora import LoraLinear, LoraWeights, apply_lora
from tenantserve.engine.layers.lora_batch import LoraBatch
from tenantserve.engine.lora_files import LoraAdapterWeights, LoraPair, read_adapter
from tenantserve.engine.models.checkpoint import load_model, read_config
from tenantserve.engine.models.llama import LlamaConfig, LlamaDecoderLayer, LlamaForCausalLM
from tenantserve.errors import AdapterError, EngineError
from tests.helpers.attention import allocate_sequences, build_step, make_kv_caches, run_step
from tests.helpers.lora import write_random_adapter

BLOCK_SIZE = 4
MAX_RANK = 8
CPU = torch.device("cpu")


@dataclass(frozen=True)
class TinySetup:
    model_dir: Path
    adapter_dirs: tuple[Path, ...]  # slot i + 1 holds adapter_dirs[i]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    root = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    hf_cfg = HFLlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=128,
        initializer_range=0.1,
    )
    model_dir = root / "model"
    HFLlamaForCausalLM(hf_cfg).save_pretrained(model_dir)
    adapters = (
        # all-linear at the slot rank
        write_random_adapter(model_dir, root / "a1", rank=8, targets="all-linear", seed=1),
        # q/v only, rank 4 (zero-padded to the slot rank)
        write_random_adapter(model_dir, root / "a2", rank=4, targets=["q_proj", "v_proj"], seed=2),
        # rsLoRA scaling, a per-module rank and alpha
        write_random_adapter(
            model_dir,
            root / "a3",
            rank=6,
            targets=["o_proj", "gate_proj", "down_proj"],
            seed=3,
            alpha=3,
            use_rslora=True,
            peft_options={"rank_pattern": {"down_proj": 3}, "alpha_pattern": {"o_proj": 7.0}},
        ),
    )
    return TinySetup(model_dir, adapters)


def _lora_model(setup: TinySetup) -> tuple[LlamaForCausalLM, LoraWeights]:
    model = load_model(setup.model_dir)
    weights = apply_lora(model, LoraConfig(max_loras=4, max_lora_rank=MAX_RANK))
    model_cfg = read_config(setup.model_dir)
    for slot, adapter_dir in enumerate(setup.adapter_dirs, start=1):
        weights.load_slot(slot, read_adapter(f"a{slot}", adapter_dir, model_cfg, MAX_RANK))
    return model, weights


def _layer(model: LlamaForCausalLM, i: int) -> LlamaDecoderLayer:
    layer = model.layers[i]
    assert isinstance(layer, LlamaDecoderLayer)
    return layer


def _lora_linear(module: torch.nn.Module) -> LoraLinear:
    assert isinstance(module, LoraLinear)
    return module


def _reference_logits(setup: TinySetup, slot: int, token_ids: list[int]) -> torch.Tensor:
    """[L, vocab] logits of the Hugging Face model, adapter merged by peft, run alone."""
    hf = HFLlamaForCausalLM.from_pretrained(setup.model_dir, dtype=torch.float32)
    if slot:
        hf = PeftModel.from_pretrained(hf, setup.adapter_dirs[slot - 1]).merge_and_unload()
    with torch.inference_mode():
        return hf(torch.tensor([token_ids])).logits[0].float()


def test_mixed_batch_rows_match_merged_adapter_reference(tiny: TinySetup) -> None:
    """Four sequences (base, adapters 1-3) share every step: a prefill from an empty cache,
    a decode step, and a step mixing decodes with chunked-prefill continuations."""
    model, weights = _lora_model(tiny)
    cfg = model.config
    gen = torch.Generator().manual_seed(7)
    prompt_lengths = [5, 18, 3, 7]  # adapter 1's prompt is long enough to be a segment
    prompts = [
        torch.randint(0, cfg.vocab_size, (n,), generator=gen).tolist() for n in prompt_lengths
    ]
    more = [torch.randint(0, cfg.vocab_size, (5,), generator=gen).tolist() for _ in prompts]
    seqs = allocate_sequences([n + 5 for n in prompt_lengths], BLOCK_SIZE)
    caches = make_kv_caches(cfg, sum(len(s.block_ids) for s in seqs), BLOCK_SIZE)
    # (decodes, prefills) by sequence index; sequence i uses slot i (0: the base model)
    steps: list[tuple[list[tuple[int, int]], list[tuple[int, list[int]]]]] = [
        ([], [(i, p) for i, p in enumerate(prompts)]),
        ([(i, m[0]) for i, m in enumerate(more)], []),
        ([(0, more[0][1]), (1, more[1][1])], [(2, more[2][1:5]), (3, more[3][1:5])]),
    ]
    paths = []
    computed: list[list[torch.Tensor]] = [[] for _ in seqs]  # logit rows per sequence
    with torch.inference_mode():
        for decodes, prefills in steps:
            token_slots = [i for i, _ in decodes] + [i for i, chunk in prefills for _ in chunk]
            batch = LoraBatch.from_token_slots(token_slots)
            paths.append(
                (bool(batch.segments), batch.padded is not None and batch.padded.token_range)
            )
            weights.set_token_slots(token_slots)
            step = build_step(
                BLOCK_SIZE,
                decodes=[(seqs[i], tok) for i, tok in decodes],
                prefills=[(seqs[i], chunk) for i, chunk in prefills],
            )
            logits = run_step(model, caches, step)  # [T, vocab]
            for row, i in enumerate(token_slots):
                computed[i].append(logits[row])
    # segments only; padded rows already in order; padded rows gathered (with padding)
    assert paths == [(True, False), (False, (1, 4)), (False, None)]

    for i, seq in enumerate(seqs):
        ref = _reference_logits(tiny, i, seq.token_ids)  # [L, vocab]
        ours = torch.stack(computed[i])
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        if i:  # the adapter really changes the output, far beyond the tolerance
            base = _reference_logits(tiny, 0, seq.token_ids)
            assert (ref - base).abs().max() > 1e-2 * ref.abs().max()


def _qkv_with_random_slots(
    seed: int, num_slots: int = 6, max_rank: int = 4
) -> tuple[LoraLinear, LoraWeights, list[torch.Tensor]]:
    """Layer 0's qkv LoraLinear of a small random model, every slot holding random factors
    of rank 1..max_rank; also each slot's merged delta weight [out, in]."""
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    weights = apply_lora(model, LoraConfig(max_loras=num_slots, max_lora_rank=max_rank))
    gen = torch.Generator().manual_seed(seed)
    deltas = []
    for slot in range(1, num_slots + 1):
        rank = 1 + slot % max_rank
        pairs, blocks = {}, []
        subs = ("q_proj", "k_proj", "v_proj")
        for sub, out in zip(subs, cfg.packed_output_sizes("qkv_proj"), strict=True):
            a = torch.randn(rank, cfg.hidden_size, generator=gen)
            b = torch.randn(out, rank, generator=gen)
            pairs[(0, sub)] = LoraPair(a, b)
            blocks.append(b @ a)  # [out_j, in]
        weights.load_slot(slot, LoraAdapterWeights(f"s{slot}", rank, pairs))
        deltas.append(torch.cat(blocks))
    return _lora_linear(_layer(model, 0).self_attn.qkv_proj), weights, deltas


@pytest.mark.parametrize(
    "token_slots",
    [
        [1, 1, 2, 3, 3, 3, 4, 0, 0, 5],  # short runs of many slots: padded, gathered
        [0, 0, 1, 1, 2, 2, 3, 3, 0],  # padded rows already in order: no gather
        [0, 2, 2, 0, 6, 6, 6, 0, 2],  # holes in the slot range, a slot in two runs
        [3] * 20 + [0] * 3 + [1] * 17,  # long runs: segments
        [1, 0, 2, 3] + [4] * 40 + [1, 1],  # padded group plus a long segment
        [5] * 12 + [1, 2, 3],  # one busy slot is moved out of the padded group
        [0, 0, 0],
    ],
)
def test_every_row_gets_its_own_adapter_delta(token_slots: list[int]) -> None:
    layer, weights, deltas = _qkv_with_random_slots(seed=len(token_slots))
    x = torch.randn(len(token_slots), layer.lora.a.shape[-1])  # [T, in]
    with torch.inference_mode():
        weights.set_batch(LoraBatch.from_token_slots(token_slots))
        out = layer(x)
        base = layer.base(x)
    expected = torch.stack(
        [base[t] + (deltas[s - 1] @ x[t] if s else 0.0) for t, s in enumerate(token_slots)]
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_plan_uses_padded_rows_for_short_runs_and_segments_for_long_ones() -> None:
    decode = LoraBatch.from_token_slots([1, 1, 2, 3, 4, 0])
    assert decode.segments == () and decode.padded is not None
    assert decode.padded.slots == {1, 2, 3, 4} and decode.padded.rows_per_slot == 2
    assert decode.padded.token_range is None  # slots 2..4 have one token: padding

    in_order = LoraBatch.from_token_slots([0, 1, 1, 2, 2, 3, 3])
    assert in_order.padded is not None and in_order.padded.token_range == (1, 7)

    mixed = LoraBatch.from_token_slots([1, 2, 3] + [2] * 16)
    assert [(s.start, s.end, s.slot) for s in mixed.segments] == [(3, 19, 2)]
    assert mixed.padded is not None and mixed.padded.slots == {1, 2, 3}

    two_runs = LoraBatch.from_token_slots([0, 1, 1, 2])
    assert two_runs.padded is None and len(two_runs.segments) == 2

    busy = LoraBatch.from_token_slots([5] * 12 + [1, 2, 3])
    assert busy.padded is not None and busy.padded.slots == {1, 2, 3}
    assert [s.slot for s in busy.segments] == [5]

    base_only = LoraBatch.from_token_slots([0] * 8)
    assert base_only.slots == frozenset() and base_only.padded is None


def test_batch_without_adapter_tokens_returns_the_base_output(tiny: TinySetup) -> None:
    model, weights = _lora_model(tiny)
    weights.set_token_slots([0] * 5)
    assert all(weights.plan(kind) is None for kind in ("qkv_proj", "o_proj", "down_proj"))
    layer = _lora_linear(_layer(model, 0).mlp.gate_up_proj)
    x = torch.randn(5, model.config.hidden_size)
    assert torch.equal(layer(x), layer.base(x))


def test_linears_no_adapter_in_the_batch_targets_are_skipped(tiny: TinySetup) -> None:
    _, weights = _lora_model(tiny)
    assert weights.slot_targets(2) == {"qkv_proj"}
    weights.set_token_slots([0, 2, 2, 0])
    assert weights.plan("qkv_proj") is not None
    assert weights.plan("o_proj") is None
    assert weights.plan("gate_up_proj") is None
    assert weights.plan("down_proj") is None
    weights.set_token_slots([3, 2])
    assert weights.plan("o_proj") is not None and weights.plan("down_proj") is not None


def test_reloading_a_slot_leaves_nothing_of_the_previous_adapter(tiny: TinySetup) -> None:
    model_cfg = read_config(tiny.model_dir)
    big = read_adapter("a1", tiny.adapter_dirs[0], model_cfg, MAX_RANK)  # rank 8, all-linear
    small = read_adapter("a2", tiny.adapter_dirs[1], model_cfg, MAX_RANK)  # rank 4, q/v
    cfg = LoraConfig(max_loras=2, max_lora_rank=MAX_RANK)
    reused = LoraWeights(model_cfg, cfg, torch.float32, CPU)
    fresh = LoraWeights(model_cfg, cfg, torch.float32, CPU)
    reused.load_slot(1, big)
    reused.load_slot(1, small)
    fresh.load_slot(1, small)
    assert reused.slot_targets(1) == {"qkv_proj"}
    for got, want in zip(reused.modules, fresh.modules, strict=True):
        for kind in got:
            assert torch.equal(got[kind].a, want[kind].a)
            assert torch.equal(got[kind].b, want[kind].b)
    reused.clear_slot(1)
    assert all(not m[k].a.any() and not m[k].b.any() for m in reused.modules for k in m)


def test_batch_using_an_empty_slot_is_refused(tiny: TinySetup) -> None:
    _, weights = _lora_model(tiny)
    weights.clear_slot(3)
    with pytest.raises(EngineError, match="slot 3"):
        weights.set_token_slots([1, 3])
    adapter = read_adapter("a1", tiny.adapter_dirs[0], read_config(tiny.model_dir), MAX_RANK)
    with pytest.raises(ValueError, match="slot"):
        weights.load_slot(0, adapter)


def test_stale_batch_with_another_token_count_is_refused(tiny: TinySetup) -> None:
    model, weights = _lora_model(tiny)
    weights.set_token_slots([1, 2, 3])
    layer = _lora_linear(_layer(model, 1).self_attn.qkv_proj)
    with pytest.raises(EngineError, match="set_batch"):
        layer(torch.randn(4, model.config.hidden_size))


def test_adapter_above_the_slot_rank_is_refused(tiny: TinySetup) -> None:
    model_cfg = read_config(tiny.model_dir)
    weights = LoraWeights(model_cfg, LoraConfig(max_loras=1, max_lora_rank=4), torch.float32, CPU)
    with pytest.raises(AdapterError, match="rank 8"):
        weights.load_slot(1, read_adapter("a1", tiny.adapter_dirs[0], model_cfg, MAX_RANK))


def test_applying_lora_twice_is_refused(tiny: TinySetup) -> None:
    model, _ = _lora_model(tiny)
    with pytest.raises(ValueError, match="already"):
        apply_lora(model, LoraConfig(max_loras=1, max_lora_rank=MAX_RANK))
