"""Fairness benchmark (issue 3).

1. Premium TTFT under a free-tier flood. Three processes: `tenantserve up` (the real model,
   SmolLM2-135M, unless --tiny; `max_num_seqs` small so seats are contended), the flood
   (10 free-tier tenants, one request loop each, max_tokens=64) and this one, which sends
   sequential streaming premium requests (a ~200-token prompt made unique per request so
   the prefix cache does not serve it, max_tokens=16) and times the first content chunk:
   unloaded, under the flood, unloaded again. Target: loaded p95 / unloaded p95 <= 1.2.
   Where the time went comes from the server's request log (`tenantserve.requests`):
   admission, engine queue, engine TTFT, preemptions, per premium request.
2. VTC (the gateway in-process, the tiny random model): a heavy standard tenant (8
   concurrent loops) and a light one (2 loops), both always backlogged with the same
   request, for --vtc-seconds. Served weighted tokens
   (input + 2 x output, from `usage`) per tenant; the difference against the VTC bound
   2 * max_in_flight * (max request cost).

Usage: .venv/bin/python bench/fairness.py [--max-num-seqs 4] [--vtc-seconds 30]
Writes bench/results/fairness.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

from tenantserve.bootstrap import open_tenancy  # noqa: E402
from tenantserve.engine.config import SchedulerConfig  # noqa: E402
from tenantserve.engine.models.convert import ensure_default_model  # noqa: E402
from tenantserve.tiers import Tier  # noqa: E402
from tests.helpers.models import write_tiny_llama  # noqa: E402
from tests.helpers.server import add_tenant, serve, server_settings  # noqa: E402

GENEROUS = {
    "requests_per_minute": 1_000_000,
    "tokens_per_minute": 1_000_000_000,
    "max_concurrent": 1_000,
}
PREMIUM_PROMPT = (
    "You are a careful assistant for a product team. Summarize the following meeting notes "
    "in three bullet points, keeping names and dates. " * 6
)
FLOOD_PROMPT = "Write a long story about a dragon who learns to cook."
VTC_PROMPT = "List a few facts about the ocean, please."


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, round(0.95 * (len(xs) - 1))))
    return xs[k]


_premium_ids = iter(range(1_000_000))


async def ttft(client: openai.AsyncOpenAI, model: str) -> float:
    """Seconds from sending to the first chunk with content; the prompt starts with a
    fresh number so no two requests share a cached prefix."""
    prompt = f"Ticket {next(_premium_ids)}. {PREMIUM_PROMPT}"
    t0 = time.perf_counter()
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    first: float | None = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
    return first if first is not None else time.perf_counter() - t0


async def premium_series(client: openai.AsyncOpenAI, model: str, n: int) -> list[float]:
    return [await ttft(client, model) for _ in range(n)]


class Counts:
    def __init__(self) -> None:
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.prompt = 0
        self.completion = 0

    @property
    def weighted(self) -> int:
        return self.prompt + 2 * self.completion

    def error(self, e: Exception) -> None:
        key = f"{type(e).__name__}:{getattr(e, 'status_code', '')}"
        self.errors[key] = self.errors.get(key, 0) + 1


async def loop(
    client: openai.AsyncOpenAI, model: str, prompt: str, max_tokens: int, counts: Counts
) -> None:
    """One always-backlogged client: a new request as soon as the last one finished."""
    while True:
        try:
            r = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0,
            )
        except asyncio.CancelledError:
            raise
        except openai.APIStatusError as e:
            counts.error(e)
            await asyncio.sleep(0.05)
            continue
        counts.ok += 1
        if r.usage is not None:
            counts.prompt += r.usage.prompt_tokens
            counts.completion += r.usage.completion_tokens


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


async def wait_idle(service, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = service.queue.stats()
        if s.in_flight == 0 and sum(s.waiting.values()) == 0:
            return
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> dict:
    smollm2 = ensure_default_model(REPO_ROOT / ".tenantserve")
    with tempfile.TemporaryDirectory(prefix="ts-fairness-") as tmp:
        tmpdir = Path(tmp)
        tiny = write_tiny_llama(tmpdir / "tiny-llama", smollm2)
        data_dir = tmpdir / "data"
        data_dir.mkdir()
        settings = server_settings(data_dir, tiny)

        tenancy = await open_tenancy(settings)
        try:
            svc = tenancy.service
            premium = await add_tenant(svc, "premium-1", tier="premium")
            frees = [await add_tenant(svc, f"free-{i}", tier="free") for i in range(args.flood)]
            heavy = await add_tenant(svc, "heavy", tier="standard")
            light = await add_tenant(svc, "light", tier="standard")
            for t in (premium, *frees, heavy, light):
                await svc.update_tenant(t.id, limits=GENEROUS)
        finally:
            await tenancy.db.dispose()

        ttft_model = tiny if args.tiny else smollm2
        ttft_res = await ttft_phase(args, data_dir, ttft_model, premium.key, premium.id, frees)
        vtc = []
        for n in args.vtc_max_num_seqs:
            s_n = replace(settings, scheduler=SchedulerConfig(max_num_seqs=n))
            async with serve(s_n) as (url, service):
                vtc.append(await vtc_phase(args, url, service, heavy, light, n))
        return {"max_num_seqs": args.max_num_seqs, "ttft": ttft_res, "vtc": vtc}


def flood_process(url: str, keys: list[str], model: str, stop, out) -> None:
    """The free-tier flood, in its own process: one request loop per tenant until `stop`."""

    async def run() -> None:
        counts = [Counts() for _ in keys]
        clients = [
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=k, max_retries=0, timeout=120)
            for k in keys
        ]
        tasks = [
            asyncio.create_task(loop(c, model, FLOOD_PROMPT, 64, n))
            for c, n in zip(clients, counts, strict=True)
        ]
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await cancel_all(tasks)
        out.put({"ok": sum(c.ok for c in counts), "errors": _merge([c.errors for c in counts])})

    asyncio.run(run())


async def ttft_phase(
    args: argparse.Namespace,
    data_dir: Path,
    model_dir: Path,
    premium_key: str,
    premium_id: str,
    frees: list,
) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TENANTSERVE_DATA_DIR": str(data_dir),
        "TENANTSERVE_MODEL_DIR": str(model_dir),
        "TENANTSERVE_KV_CACHE_BYTES": str(256 << 20),
        "TENANTSERVE_MAX_NUM_SEQS": str(args.max_num_seqs),
        "TENANTSERVE_ADMIN_TOKEN": "tsadm-fairness-bench",
    }
    if args.engine_threads:
        env["TENANTSERVE_ENGINE_THREADS"] = str(args.engine_threads)
    log_path = data_dir / "server.log"
    cmd = [str(REPO_ROOT / ".venv" / "bin" / "tenantserve"), "up", "--port", str(port)]
    with log_path.open("w") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    model = model_dir.name
    try:
        await _wait_healthy(url, server)
        pc = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=premium_key, max_retries=0)
        print("premium: warm-up, unloaded", file=sys.stderr, flush=True)
        await premium_series(pc, model, 5)
        unloaded = await premium_series(pc, model, args.premium_n)
        ctx = mp.get_context("spawn")
        stop, results = ctx.Event(), ctx.Queue()
        flood = ctx.Process(
            target=flood_process, args=(url, [f.key for f in frees], model, stop, results)
        )
        flood.start()
        await asyncio.sleep(args.flood_warmup)
        print("premium: under the flood", file=sys.stderr, flush=True)
        loaded = await premium_series(pc, model, args.premium_n)
        stop.set()
        flood_counts = results.get(timeout=120)
        flood.join(timeout=30)
        await asyncio.sleep(2.0)  # the flood's last requests finish
        print("premium: unloaded again", file=sys.stderr, flush=True)
        unloaded_after = await premium_series(pc, model, args.premium_n)
        await pc.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    records = _premium_records(log_path, premium_id)
    n = args.premium_n
    phases = {"unloaded": records[5 : 5 + n], "loaded": records[5 + n : 5 + 2 * n]}
    return {
        "model": model,
        "engine_threads": args.engine_threads,
        "unloaded_p95_s": p95(unloaded),
        "unloaded_median_s": statistics.median(unloaded),
        "unloaded_after_p95_s": p95(unloaded_after),
        "loaded_p95_s": p95(loaded),
        "loaded_median_s": statistics.median(loaded),
        "ratio_p95": p95(loaded) / p95(unloaded),
        "ratio_p95_vs_best_unloaded": p95(loaded) / min(p95(unloaded), p95(unloaded_after)),
        "free_ok": flood_counts["ok"],
        "free_errors": flood_counts["errors"],
        "breakdown": {name: _breakdown(rs) for name, rs in phases.items()},
        "samples": {"unloaded": unloaded, "loaded": loaded, "unloaded_after": unloaded_after},
    }


async def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(1800):
            if server.poll() is not None:
                raise SystemExit(f"tenantserve up exited with {server.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit("tenantserve up did not become healthy in 180 s")


def _premium_records(log_path: Path, tenant_id: str) -> list[dict]:
    """The premium tenant's request-log records, in completion order."""
    out = []
    for line in log_path.read_text().splitlines():
        if "tenantserve.requests" in line and tenant_id in line:
            out.append(json.loads(line[line.index("{") :]))
    return out


def _breakdown(records: list[dict]) -> dict:
    def stat(key: str) -> dict:
        xs = [r[key] for r in records if r.get(key) is not None]
        if not xs:
            return {}
        return {"median": statistics.median(xs), "p95": p95(xs)}

    return {
        "n": len(records),
        "admission_ms": stat("admission_ms"),
        "engine_queue_ms": stat("engine_queue_ms"),
        "engine_ttft_ms": stat("ttft_ms"),
        "preemptions": sum(r.get("preemptions", 0) for r in records),
    }


async def vtc_phase(args, url, service, heavy, light, max_num_seqs: int) -> dict:
    """Heavy (8 loops) vs light (2 loops), standard tier, same request, both backlogged."""
    model = service.model.name

    def sdk(key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)

    hc, lc = Counts(), Counts()
    heavy_client, light_client = sdk(heavy.key), sdk(light.key)
    tasks = [
        asyncio.create_task(loop(heavy_client, model, VTC_PROMPT, args.vtc_max_tokens, hc))
        for _ in range(args.heavy_loops)
    ]
    tasks += [
        asyncio.create_task(loop(light_client, model, VTC_PROMPT, args.vtc_max_tokens, lc))
        for _ in range(args.light_loops)
    ]
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.vtc_seconds:
        await asyncio.sleep(1.0)
        samples.append(abs(hc.weighted - lc.weighted))
    vtc_counters = dict(service.queue.stats().counters.get(Tier.STANDARD, {}))
    await cancel_all(tasks)
    prompt_tokens = hc.prompt // max(hc.ok, 1)
    max_cost = prompt_tokens + 2 * args.vtc_max_tokens
    bound = 2 * max_num_seqs * max_cost
    events = [str(e) for e in service.events.events()]
    vtc_res = {
        "seconds": args.vtc_seconds,
        "heavy": {
            "requests": hc.ok,
            "weighted": hc.weighted,
            "prompt": hc.prompt,
            "completion": hc.completion,
            "errors": hc.errors,
            "vtc_counter": vtc_counters.get(heavy.id),
        },
        "light": {
            "requests": lc.ok,
            "weighted": lc.weighted,
            "prompt": lc.prompt,
            "completion": lc.completion,
            "errors": lc.errors,
            "vtc_counter": vtc_counters.get(light.id),
        },
        "diff_end": abs(hc.weighted - lc.weighted),
        "diff_max_sampled": max(samples) if samples else None,
        "max_request_cost": max_cost,
        "bound": bound,
        "max_num_seqs": max_num_seqs,
        "events": events,
    }
    await heavy_client.close()
    await light_client.close()
    return vtc_res


def _merge(ds: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def table(r: dict) -> str:
    t = r["ttft"]
    ms = lambda s: f"{1000 * s:.1f} ms"  # noqa: E731
    lines = [
        f"Premium TTFT, {t['model']}, max_num_seqs = {r['max_num_seqs']}, "
        f"engine threads = {t['engine_threads'] or 'default'}",
        "",
        "| premium TTFT (~200-token unique prompt, max_tokens=16, streaming) | p95 | median |",
        "|---|---|---|",
        f"| unloaded | {ms(t['unloaded_p95_s'])} | {ms(t['unloaded_median_s'])} |",
        f"| {ARGS.flood} free tenants flooding (1 loop each, max_tokens=64) "
        f"| {ms(t['loaded_p95_s'])} | {ms(t['loaded_median_s'])} |",
        f"| unloaded again, after the flood | {ms(t['unloaded_after_p95_s'])} | — |",
        f"| **ratio loaded / unloaded p95** (target ≤ 1.2) | **{t['ratio_p95']:.2f}×** | |",
        "",
        "| server-side, premium (request log) | admission p95 | engine queue p95 "
        "| engine TTFT median / p95 | preemptions |",
        "|---|---|---|---|---|",
    ]
    for name, b in t["breakdown"].items():
        a, q, e = b["admission_ms"], b["engine_queue_ms"], b["engine_ttft_ms"]
        lines.append(
            f"| {name} ({b['n']}) | {a.get('p95', 0):.1f} ms | {q.get('p95', 0):.1f} ms "
            f"| {e.get('median', 0):.1f} / {e.get('p95', 0):.1f} ms | {b['preemptions']} |"
        )
    lines += [
        "",
        f"Free requests served during the flood: {t['free_ok']}, errors: {t['free_errors']}.",
        "",
        f"| VTC, standard tier, {ARGS.heavy_loops} heavy vs {ARGS.light_loops} light loops "
        f"| max_in_flight | heavy req / weighted | light req / weighted | diff at end "
        "(max of 1 s samples) | bound 2·max_in_flight·max cost "
        "| queue VTC counters heavy / light |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in r["vtc"]:
        h, lt = v["heavy"], v["light"]
        lines.append(
            f"| {v['seconds']:.0f} s | {v['max_num_seqs']} | {h['requests']} / {h['weighted']} "
            f"| {lt['requests']} / {lt['weighted']} | {v['diff_end']} ({v['diff_max_sampled']}) "
            f"| {v['bound']} (2·{v['max_num_seqs']}·{v['max_request_cost']}) "
            f"| {h['vtc_counter'] or 0:.0f} / {lt['vtc_counter'] or 0:.0f} |"
        )
    lines.append("")
    lines.append(
        "operator events in VTC runs: " + ", ".join(str(len(v["events"])) for v in r["vtc"])
    )
    return "\n".join(lines)


ARGS: argparse.Namespace

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-num-seqs", type=int, default=4)
    ap.add_argument("--premium-n", type=int, default=20)
    ap.add_argument("--flood", type=int, default=10)
    ap.add_argument("--flood-warmup", type=float, default=5.0)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model for TTFT")
    ap.add_argument("--engine-threads", type=int, default=None)
    ap.add_argument("--heavy-loops", type=int, default=8)
    ap.add_argument("--light-loops", type=int, default=2)
    ap.add_argument("--vtc-seconds", type=float, default=20.0)
    ap.add_argument(
        "--vtc-max-num-seqs", type=lambda x: [int(v) for v in x.split(",")], default=[4, 2]
    )
    ap.add_argument("--vtc-max-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "fairness.json")
    ARGS = ap.parse_args()
    t_start = time.perf_counter()
    result = asyncio.run(main(ARGS))
    result["wall_s"] = time.perf_counter() - t_start
    ARGS.out.parent.mkdir(parents=True, exist_ok=True)
    ARGS.out.write_text(json.dumps(result, indent=2, default=str))
    print(table(result))
    print(f"\nwall time {result['wall_s']:.0f} s; raw results in {ARGS.out}")
