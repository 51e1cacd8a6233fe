"""Engine benchmark: tenantserve's built-in engine vs Hugging Face transformers, side by side.

    .venv/bin/python bench/engine.py [--quick] [--out bench/results/engine.json]

SmolLM2-135M-Instruct, fp32 on CPU, 64 new tokens, mixed prompt lengths. Sections:
1. throughput at 1, 8, 32 concurrent requests vs transformers `generate` (static batches)
2. multi-LoRA cost: 0, 1, 8 distinct rank-8 q/v adapters; 8 rank-16 all-linear adapters
3. adapter load latency host->active and disk->active (rank-16 all-linear)
4. prefix cache: TTFT of a 1,000-token shared system prompt, same tenant vs other tenant
5. batch-1 decode tok/s vs transformers, fp32 and bf16 weights, with greedy agreement
Prints a markdown table (pasted into docs/benchmarks.md) and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tenantserve.engine.config import CacheConfig, EngineConfig, LoraConfig, SchedulerConfig  # noqa: E402
from tenantserve.engine.engine import LLMEngine  # noqa: E402
from tenantserve.engine.models.convert import ensure_default_model  # noqa: E402
from tenantserve.engine.models.llama import LlamaConfig  # noqa: E402
from tenantserve.engine.request import EngineRequest, LoraRef, SamplingParams  # noqa: E402

NEW_TOKENS = 64
PROMPT_LENGTHS = (16, 32, 64, 96, 128)  # cycled: "mixed prompt lengths", mean 67
PEAK_GFLOPS = 190.0  # 2 cores x AVX2 FMA fp32, the estimate for this machine
TEXT = (
    "The history of computing is a story of abstraction layered upon abstraction. "
    "Early machines were programmed by rewiring; later, stored programs made software "
    "a thing of its own, and compilers let people write in terms of problems rather "
    "than registers. Operating systems shared one machine among many users, networks "
    "joined machines, and the web joined people. "
)


def prompt_ids(tokenizer: Any, n: int, salt: int) -> list[int]:
    base = tokenizer.encode(f"Document {salt}. " + TEXT * 40)
    return base[:n]


def gflop_per_token(cfg: LlamaConfig, with_lm_head: bool = True) -> float:
    """2 FLOPs per weight per token of every linear (the embedding lookup is free)."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    per_layer = h * (cfg.q_size + 2 * cfg.kv_size) + cfg.q_size * h + 3 * h * i
    weights = cfg.num_hidden_layers * per_layer + (cfg.vocab_size * h if with_lm_head else 0)
    return 2 * weights / 1e9


# -- tenantserve ------------------------------------------------------------------------


def run_engine(engine: LLMEngine, requests: list[EngineRequest]) -> dict[str, Any]:
    """Submit all requests at once, step to completion; tokens/s and TTFTs."""
    t0 = time.perf_counter()
    for r in requests:
        engine.add_request(replace(r, arrival_time=time.monotonic()))
    num_tokens = 0
    ttfts: list[float] = []
    decode_steps: list[float] = []  # wall time of steps where every request decoded
    while engine.has_unfinished_requests():
        t_step = time.perf_counter()
        outs = engine.step()
        if len(outs) == len(requests) and not any(o.finished for o in outs):
            decode_steps.append(time.perf_counter() - t_step)
        for out in outs:
            num_tokens += len(out.new_token_ids)
            if out.finished and out.metrics and out.metrics.ttft_s is not None:
                ttfts.append(out.metrics.ttft_s)
    elapsed = time.perf_counter() - t0
    decode_steps.sort()
    return {
        "tokens": num_tokens,
        "seconds": elapsed,
        "tok_s": num_tokens / elapsed,
        "ttfts": ttfts,
        "decode_step_ms": decode_steps[len(decode_steps) // 2] * 1e3 if decode_steps else None,
    }


def make_requests(
    tokenizer: Any, n: int, loras: list[LoraRef | None] | None = None, tag: str = ""
) -> list[EngineRequest]:
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    out = []
    for i in range(n):
        ids = prompt_ids(tokenizer, PROMPT_LENGTHS[i % len(PROMPT_LENGTHS)], salt=i)
        lora = loras[i % len(loras)] if loras else None
        out.append(EngineRequest(f"{tag}{i}", tuple(ids), params, tenant_id=f"t{i}", lora=lora))
    return out


# -- transformers -----------------------------------------------------------------------


def run_transformers(model: Any, tokenizer: Any, batch: list[list[int]]) -> dict[str, Any]:
    """One static batch through `generate` (left padding), exactly NEW_TOKENS each."""
    width = max(len(p) for p in batch)
    pad = tokenizer.eos_token_ids and min(tokenizer.eos_token_ids)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=pad,
        )
    elapsed = time.perf_counter() - t0
    tokens = (out.shape[1] - width) * len(batch)
    return {"tokens": tokens, "seconds": elapsed, "tok_s": tokens / elapsed, "out": out[:, width:]}


def timed(fn: Callable[[], Any], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# -- sections ---------------------------------------------------------------------------


def bench_throughput(cfg: EngineConfig, hf: Any, quick: bool) -> list[dict[str, Any]]:
    engine = LLMEngine(cfg)
    tok = engine.tokenizer
    gflop_decode = gflop_per_token(engine.model_config)
    # Prefill computes logits only for the last token of a prompt.
    gflop_prefill = gflop_per_token(engine.model_config, with_lm_head=False)
    run_engine(engine, make_requests(tok, 2, tag="warm"))  # warm-up
    rows = []
    for conc in (1, 8, 32):
        if quick and conc == 32:
            continue
        reqs = make_requests(tok, conc, tag=f"c{conc}-")
        ours = max(
            (run_engine(engine, make_requests(tok, conc, tag=f"c{conc}-{k}-")) for k in range(2)),
            key=lambda r: r["tok_s"],
        )
        theirs = run_transformers(hf, tok, [list(r.prompt_token_ids) for r in reqs])
        rows.append(
            {
                "concurrency": conc,
                "tenantserve_tok_s": ours["tok_s"],
                "transformers_tok_s": theirs["tok_s"],
                "speedup": ours["tok_s"] / theirs["tok_s"],
                # Useful FLOPs (prompt + generated tokens) per second over the 2-core peak.
                "fraction_of_peak": (
                    (
                        sum(len(r.prompt_token_ids) for r in reqs) * gflop_prefill
                        + ours["tokens"] * gflop_decode
                    )
                    / ours["seconds"]
                    / PEAK_GFLOPS
                ),
            }
        )
        print(f"  concurrency {conc}: {rows[-1]}", flush=True)
    return rows


def write_adapters(model_dir: Path, root: Path, n: int, rank: int, targets: Any) -> list[LoraRef]:
    from tests.helpers.lora import write_random_adapter

    refs = []
    for i in range(n):
        name = f"r{rank}-{'all' if targets == 'all-linear' else 'qv'}-{i}"
        path = write_random_adapter(model_dir, root / name, rank, targets, seed=i)
        refs.append(LoraRef(name, str(path)))
    return refs


def bench_multi_lora(cfg: EngineConfig, root: Path) -> list[dict[str, Any]]:
    """32 concurrent requests; 0, 1 or 8 distinct adapters spread over the batch.

    End-to-end throughput (prefill + 64 decode steps, best of 3 interleaved rounds), and
    the steady-state decode step measured step-by-step interleaved: one engine per case,
    each holding 32 decoding requests, stepped in turn, so that machine noise (which is
    +-15% between runs here) hits every case alike; median per case.
    """
    qv = write_adapters(cfg.model_dir, root, 8, 8, ["q_proj", "v_proj"])
    full = write_adapters(cfg.model_dir, root, 8, 16, "all-linear")
    cases: list[tuple[str, list[LoraRef | None] | None]] = [
        ("0 adapters", None),
        ("1 adapter rank-8 q/v", [qv[0]]),
        ("8 adapters rank-8 q/v", list(qv)),
        ("8 adapters rank-16 all-linear", list(full)),
    ]
    small = replace(cfg, cache=CacheConfig(kv_cache_bytes=512 << 20))
    engines = {name: LLMEngine(small) for name, _ in cases}
    tok = next(iter(engines.values())).tokenizer
    best: dict[str, float] = {}
    for k in range(3):
        for name, loras in cases:
            r = run_engine(engines[name], make_requests(tok, 32, loras, tag=f"{name}-{k}"))
            best[name] = max(best.get(name, 0.0), r["tok_s"])
    long = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
    for name, loras in cases:
        for r in make_requests(tok, 32, loras, tag=f"steady-{name}"):
            engines[name].add_request(replace(r, sampling=long))
        for _ in range(12):  # through prefill
            engines[name].step()
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(40):
        for name, _ in cases:
            t0 = time.perf_counter()
            engines[name].step()
            times[name].append(time.perf_counter() - t0)
    step_ms = {name: sorted(t)[len(t) // 2] * 1e3 for name, t in times.items()}
    base, base_ms = best[cases[0][0]], step_ms[cases[0][0]]
    rows = [
        {
            "case": name,
            "tok_s": best[name],
            "throughput_loss": 1 - best[name] / base,
            "decode_step_ms": step_ms[name],
            "decode_step_cost": step_ms[name] / base_ms - 1,
        }
        for name, _ in cases
    ]
    for row in rows:
        print(f"  {row}", flush=True)
    return rows


def bench_adapter_load(cfg: EngineConfig, root: Path) -> dict[str, Any]:
    """Rank-16 all-linear adapter: disk -> active (cold) and host -> active, best of 5."""
    engine = LLMEngine(replace(cfg, lora=replace(cfg.lora, max_loras=1)))
    mgr = engine.adapters
    assert mgr is not None
    refs = write_adapters(cfg.model_dir, root / "load", 6, 16, "all-linear")
    other = refs[-1]
    disk, host = [], []
    for ref in refs[:5]:
        t0 = time.perf_counter()
        slot, error = mgr.acquire(ref)
        while slot is None and error is None:
            mgr.wait_for_load(1.0)
            slot, error = mgr.acquire(ref)
        disk.append(time.perf_counter() - t0)
        assert slot is not None, error
        mgr.release(slot)
        # Push it back to the host tier by activating another adapter in the only slot.
        o_slot, _ = mgr.acquire(other)
        while o_slot is None:
            mgr.wait_for_load(1.0)
            o_slot, _ = mgr.acquire(other)
        mgr.release(o_slot)
        t0 = time.perf_counter()
        slot, _ = mgr.acquire(ref)
        host.append(time.perf_counter() - t0)
        assert slot is not None
        mgr.release(slot)
    mgr.close()
    return {"disk_to_active_ms": min(disk) * 1e3, "host_to_active_ms": min(host) * 1e3}


def bench_prefix_cache(cfg: EngineConfig) -> dict[str, Any]:
    """TTFT of a request behind a 1,000-token system prompt: cold, same tenant, other tenant."""
    engine = LLMEngine(cfg)
    tok = engine.tokenizer
    run_engine(engine, make_requests(tok, 1, tag="warm"))
    system = prompt_ids(tok, 1000, salt=999)
    params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)

    def ttft(rid: str, tenant: str, question: str) -> float:
        ids = system + tok.encode(question)
        r = EngineRequest(rid, tuple(ids), params, tenant_id=tenant)
        return run_engine(engine, [r])["ttfts"][0]

    cold = ttft("cold", "acme", " What is a compiler?")
    hit = ttft("hit", "acme", " What did networks join?")
    other = ttft("other", "globex", " What is a compiler?")
    return {
        "cold_ttft_s": cold,
        "same_tenant_ttft_s": hit,
        "other_tenant_ttft_s": other,
        "hit_speedup": cold / hit,
        "other_tenant_vs_cold": other / cold,
    }


def decode_rate(engine: LLMEngine, ids: list[int]) -> tuple[float, list[int]]:
    """Batch-1 decode tokens/s after the first token, and the greedy tokens."""
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    engine.add_request(EngineRequest("b1", tuple(ids), params, tenant_id="t"))
    tokens: list[int] = []
    first = last = 0.0
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens.extend(out.new_token_ids)
            last = time.perf_counter()
            if len(tokens) == 1:
                first = last
    return (len(tokens) - 1) / (last - first), tokens


def hf_decode_rate(hf: Any, ids: list[int]) -> float:
    """transformers batch-1: time of 64 new tokens minus the time of the first (prefill)."""
    x = torch.tensor([ids])
    with torch.inference_mode():
        kw = {"do_sample": False, "pad_token_id": 0}
        t_prefill = timed(lambda: hf.generate(x, max_new_tokens=1, min_new_tokens=1, **kw), 2)
        t_all = timed(
            lambda: hf.generate(x, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **kw), 2
        )
    return (NEW_TOKENS - 1) / (t_all - t_prefill)


def bench_batch1(cfg: EngineConfig, hf: Any) -> dict[str, Any]:
    """fp32 vs transformers, then lower-precision weights with greedy agreement vs fp32."""
    out: dict[str, Any] = {}
    chats = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Explain gravity to a child.",
        "List three uses of a paperclip.",
        "What is 12 times 12?",
        "Give me a tip for learning to cook.",
        "Why is the sky blue?",
        "Name a famous painting and its painter.",
    ]
    reference: dict[str, list[list[int]]] = {}
    for quant in ("fp32", "bf16", "int8"):
        engine = LLMEngine(replace(cfg, quantization=quant))
        tok = engine.tokenizer
        prompts = [tok.encode_chat([{"role": "user", "content": c}]) for c in chats]
        decode_rate(engine, prompts[0])  # warm-up
        rate = max(decode_rate(engine, prompts[0])[0] for _ in range(2))
        greedy = []
        for p in prompts:
            params = SamplingParams(max_tokens=32, temperature=0.0)
            r = EngineRequest(f"g{len(greedy)}", tuple(p), params, tenant_id="t")
            engine.add_request(r)
            toks: list[int] = []
            while engine.has_unfinished_requests():
                for o in engine.step():
                    toks.extend(o.new_token_ids)
            greedy.append(toks)
        reference[quant] = greedy
        out[f"{quant}_tok_s"] = rate
        if quant != "fp32":
            out[f"{quant}_greedy_agreement"] = agreement(reference["fp32"], greedy)
        del engine
        gc.collect()
    tok_ids = prompts[0]
    out["transformers_fp32_tok_s"] = hf_decode_rate(hf, tok_ids)
    out["fp32_speedup"] = out["fp32_tok_s"] / out["transformers_fp32_tok_s"]
    for quant in ("bf16", "int8"):
        out[f"{quant}_speedup"] = out[f"{quant}_tok_s"] / out["transformers_fp32_tok_s"]
    return out


def agreement(ref: list[list[int]], other: list[list[int]]) -> dict[str, float]:
    """Share of sequences identical to fp32, and of tokens before the first divergence."""
    same = sum(a == b for a, b in zip(ref, other, strict=True))
    prefix = 0
    total = 0
    for a, b in zip(ref, other, strict=True):
        n = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        prefix += n
        total += len(a)
    return {"identical_sequences": same / len(ref), "tokens_before_divergence": prefix / total}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="skip the slowest cases")
    ap.add_argument("--data-dir", type=Path, default=REPO / ".tenantserve")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "engine.json")
    ap.add_argument("--sections", default="1,2,3,4,5")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model_dir = ensure_default_model(args.data_dir)
    cfg = EngineConfig(
        model_dir=model_dir,
        cache=CacheConfig(kv_cache_bytes=2 << 30),
        scheduler=SchedulerConfig(max_num_seqs=64, max_num_batched_tokens=512),
        lora=LoraConfig(max_loras=8, max_cpu_loras=16, max_lora_rank=16),
    )
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    results: dict[str, Any] = {"threads": torch.get_num_threads()}
    sections = set(args.sections.split(","))
    if "1" in sections:
        print("1. throughput", flush=True)
        results["throughput"] = bench_throughput(cfg, hf, args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        if "2" in sections:
            print("2. multi-LoRA cost", flush=True)
            results["multi_lora"] = bench_multi_lora(cfg, Path(tmp))
        if "3" in sections:
            print("3. adapter load latency", flush=True)
            results["adapter_load"] = bench_adapter_load(cfg, Path(tmp))
            print(f"  {results['adapter_load']}", flush=True)
    if "4" in sections:
        print("4. prefix cache", flush=True)
        results["prefix_cache"] = bench_prefix_cache(cfg)
        print(f"  {results['prefix_cache']}", flush=True)
    if "5" in sections:
        print("5. batch-1 decode", flush=True)
        results["batch1"] = bench_batch1(cfg, hf)
        print(f"  {results['batch1']}", flush=True)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    gc.collect()


if __name__ == "__main__":
    main()
