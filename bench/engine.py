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
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tenantserve.config import CacheConfig, EngineConfig, LoraConfig, SchedulerConfig  # noqa: E402
from tenantserve.engine.engine import LLMEngine  # noqa: E402
from tenantserve.engine.models.convert import ensure_default_model  # noqa: E402
from tenantserve.engine.request import EngineRequest, LoraRef, SamplingParams  # noqa: E402

NEW_TOKENS = 64
PROMPT_LENGTHS = (24, 64, 128, 200, 320)  # cycled: "mixed prompt lengths"
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


def gflop_per_token(model: torch.nn.Module) -> float:
    """2 FLOPs per weight per token (the embedding lookup is free; the tied LM head is not)."""
    params = sum(p.numel() for p in model.parameters())
    return 2 * params / 1e9


# -- tenantserve ------------------------------------------------------------------------


def run_engine(engine: LLMEngine, requests: list[EngineRequest]) -> dict[str, Any]:
    """Submit all requests at once, step to completion; tokens/s and TTFTs."""
    t0 = time.perf_counter()
    for r in requests:
        engine.add_request(replace(r, arrival_time=time.monotonic()))
    num_tokens = 0
    ttfts: list[float] = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            num_tokens += len(out.new_token_ids)
            if out.finished and out.metrics and out.metrics.ttft_s is not None:
                ttfts.append(out.metrics.ttft_s)
    elapsed = time.perf_counter() - t0
    return {"tokens": num_tokens, "seconds": elapsed, "tok_s": num_tokens / elapsed, "ttfts": ttfts}


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
    run_engine(engine, make_requests(tok, 2, tag="warm"))  # warm-up
    rows = []
    for conc in (1, 8, 32):
        if quick and conc == 32:
            continue
        reqs = make_requests(tok, conc, tag=f"c{conc}-")
        ours = run_engine(engine, reqs)
        theirs = run_transformers(hf, tok, [list(r.prompt_token_ids) for r in reqs])
        rows.append(
            {
                "concurrency": conc,
                "tenantserve_tok_s": ours["tok_s"],
                "transformers_tok_s": theirs["tok_s"],
                "speedup": ours["tok_s"] / theirs["tok_s"],
            }
        )
        print(f"  concurrency {conc}: {rows[-1]}", flush=True)
    return rows


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
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    gc.collect()


if __name__ == "__main__":
    main()
