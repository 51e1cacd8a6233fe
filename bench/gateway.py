"""Gateway overhead benchmark (issue 3): tenantserve vs LiteLLM proxy in front of the same
fake OpenAI upstream, same load generator, one worker each.

    .venv/bin/python bench/gateway.py [--duration 10] [--rate 500 250] [--litellm-rate 40]
        [--concurrency 32 64] [--targets tenantserve litellm] [--profile | --profile-only]
        [--no-pin]

Processes, each its own (`bench/fake_openai.py`, `bench/loadgen.py`, the servers):

- direct: the load generator against the fake upstream itself, the baseline;
- tenantserve: `tenantserve up --pools FILE --no-engine` with one `kind = "openai"` pool
  on the fake upstream, API-key auth, Redis rate limiting (TENANTSERVE_REDIS_URL; the
  bench tenant's limits are raised so every request is admitted but every limit is
  checked and taken);
- LiteLLM: `litellm[proxy]==1.106.12` from a throwaway venv (bench/.venvs/litellm,
  created on first run), master-key auth, one `openai/` deployment on the fake upstream,
  no database (so no virtual keys and no per-key rate limits).

Per gateway: concurrency 1, then each open-loop rate (--rate for tenantserve,
--litellm-rate for LiteLLM), each right after the same load direct (added = gateway
minus direct, p50 and p99); then closed loops at each --concurrency for the most req/s
one worker serves. With two or more CPUs the server under test is pinned to the last
CPU, the load generator and the upstream to the others (--no-pin: no pinning). Server
CPU per request is read from /proc. --profile adds one py-spy'd closed-loop run of
tenantserve (needs `pip install py-spy`); --profile-only runs just that one (to see
where the CPU goes after a change, in ≈25 s); --targets picks the gateways. Writes
bench/results/gateway.json and prints markdown tables; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH = REPO_ROOT / "bench"
PYTHON = sys.executable
TENANTSERVE = str(Path(sys.executable).parent / "tenantserve")
LITELLM_VERSION = "1.106.12"
LITELLM_VENV = BENCH / ".venvs" / "litellm"
MODEL = "fake-model"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PY_SPY = str(Path(sys.executable).parent / "py-spy")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def http(url: str, body: dict | None = None, key: str | None = None) -> tuple[int, bytes]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Server:
    """A child process serving HTTP on `url`, its output in `log_path`, pinned to `cpus`."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        url: str,
        log_dir: Path,
        cpus: set[int] | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.log_path = log_dir / f"{name}.log"
        log(f"[{name}] {' '.join(argv)}  (log: {self.log_path})")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )

    def wait_ready(self, path: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}); see {self.log_path}"
                )
            try:
                status, _ = http(self.url + path)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Bench:
    """Runs the load generator (its own process, on the client CPUs) and keeps the results."""

    def __init__(self, args: argparse.Namespace, client_cpus: set[int] | None) -> None:
        self.args = args
        self.client_cpus = client_cpus
        self.runs: dict[str, dict[str, Any]] = {}

    def load(
        self,
        run: str,
        server: Server,
        key: str,
        *,
        rps: float | None = None,
        concurrency: int | None = None,
        header_metrics: tuple[str, ...] = (),
        profile: Path | None = None,
    ) -> dict[str, Any]:
        argv = [PYTHON, str(BENCH / "loadgen.py"), "--url", server.url, "--key", key]
        argv += ["--model", MODEL, "--duration", str(self.args.duration)]
        argv += ["--warmup", str(self.args.warmup)]
        argv += ["--rps", str(rps)] if rps else ["--concurrency", str(concurrency)]
        for header in header_metrics:
            argv += ["--header-metric", header]
        if self.client_cpus:
            argv = ["taskset", "-c", ",".join(map(str, sorted(self.client_cpus))), *argv]
        cpu_before_s = cpu_s(server.proc.pid)
        spy = None
        if profile is not None:
            seconds = int(self.args.warmup + self.args.duration)
            spy_argv = [PY_SPY, "record", "--pid", str(server.proc.pid), "--format", "raw"]
            spy_argv += ["--duration", str(seconds), "--output", str(profile)]
            spy = subprocess.Popen(spy_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = subprocess.run(argv, stdout=subprocess.PIPE, check=True, text=True).stdout
        if spy is not None:
            spy.wait(30)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        server_cpu_s = cpu_s(server.proc.pid) - cpu_before_s
        result["server_cpu_s"] = round(server_cpu_s, 2)
        answered = result["ok"] + sum(result["non_2xx"].values())
        if answered:
            result["server_cpu_ms_per_request"] = round(server_cpu_s / answered * 1e3, 3)
        self.runs[run] = result
        lat = result["latency_ms"]
        timing = " ".join(
            f"{name} p50/p99 {t['p50']}/{t['p99']}"
            for name, t in result["server_timing_ms"].items()
        )
        log(
            f"  {run}: {result['ok_rps']:.0f} ok req/s, p50 {lat['p50']} p99 {lat['p99']} ms, "
            f"non-2xx {result['non_2xx']} errors {result['errors']}, "
            f"server CPU {result.get('server_cpu_ms_per_request')} ms/req {timing}"
        )
        return result


def start_upstream(log_dir: Path, cpus: set[int] | None) -> Server:
    port = free_port()
    argv = [PYTHON, str(BENCH / "fake_openai.py"), "--port", str(port), "--model", MODEL]
    server = Server("upstream", argv, f"http://127.0.0.1:{port}", log_dir, cpus)
    server.wait_ready("/v1/models")
    return server


def check_completion(server: Server, key: str) -> None:
    """One request through `server`; raises unless it is a 200 chat completion with usage."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 16}
    status, raw = http(server.url + "/v1/chat/completions", body, key)
    if status != 200 or "usage" not in json.loads(raw):
        raise RuntimeError(f"{server.name}: {status} {raw[:500]!r}")


def tenantserve_has_pools() -> bool:
    help_text = subprocess.run(
        [TENANTSERVE, "up", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    return "--pools" in help_text and "--no-engine" in help_text


def cli_json(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [TENANTSERVE, *argv], capture_output=True, text=True, env={**os.environ, **env}
    )
    if out.returncode != 0:
        raise RuntimeError(f"tenantserve {' '.join(argv)}: {out.stderr or out.stdout}")
    return dict(json.loads(out.stdout))


def start_tenantserve(
    upstream: Server, work: Path, cpus: set[int] | None, redis_url: str
) -> tuple[Server, str]:
    data_dir = work / "tenantserve"
    data_dir.mkdir()
    env = {
        "TENANTSERVE_REDIS_URL": redis_url,
        "TENANTSERVE_ADMIN_TOKEN": secrets.token_urlsafe(24),
    }
    dd = ["--data-dir", str(data_dir)]
    tenant = cli_json(
        ["tenant", "create", "--name", "bench", "--tier", "premium", "--region", "us", *dd], env
    )
    limits = {
        "requests_per_minute": 100_000_000,
        "tokens_per_minute": 1_000_000_000,
        "max_concurrent": 100_000,
    }
    cli_json(["tenant", "update", tenant["id"], "--limits", json.dumps(limits), *dd], env)
    key = str(cli_json(["key", "create", "--tenant", tenant["id"], *dd], env)["key"])
    pools = work / "pools.toml"
    pools.write_text(
        "[[pool]]\n"
        'name = "upstream"\n'
        'kind = "openai"\n'
        'region = "us"\n'
        f'base_url = "{upstream.url}/v1"\n'
        f'models = ["{MODEL}"]\n'
    )
    port = free_port()
    argv = [TENANTSERVE, "up", "--pools", str(pools), "--no-engine", *dd]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    server = Server("tenantserve", argv, f"http://127.0.0.1:{port}", work, cpus, env=env)
    server.wait_ready("/health")
    check_completion(server, key)
    return server, key


def ensure_litellm() -> Path:
    """The `litellm` executable of the throwaway venv, installing it on first use."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (once; a few minutes)")
    subprocess.run([PYTHON, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True, stdout=sys.stderr)
    subprocess.run(
        [*pip, "install", f"litellm[proxy]=={LITELLM_VERSION}"], check=True, stdout=sys.stderr
    )
    return exe


def litellm_config(upstream: Server) -> str:
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream.url}/v1\n"
        "      api_key: fake\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )


def start_litellm(upstream: Server, work: Path, cpus: set[int] | None) -> tuple[Server, str]:
    exe = ensure_litellm()
    config = work / "litellm.yaml"
    config.write_text(litellm_config(upstream))
    env = {
        "LITELLM_TELEMETRY": "False",
        # the model cost map ships in the package; no fetch from GitHub at start
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    port = free_port()
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    server = Server("litellm", argv, f"http://127.0.0.1:{port}", work, cpus, env=env, cwd=work)
    server.wait_ready("/health/liveliness")
    check_completion(server, LITELLM_MASTER_KEY)
    return server, LITELLM_MASTER_KEY


IDLE_FRAMES = {"_connection_worker_thread (aiosqlite/core.py)"}


def frame_name(frame: str) -> str:
    """`func (/.../site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    func, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].split("site-packages/")[-1]
    return f"{func} ({path.removeprefix(str(REPO_ROOT) + '/')})"


def profile_summary(collapsed: Path, top: int = 30) -> list[dict[str, Any]]:
    """The functions holding the most on-CPU samples of a py-spy raw (collapsed) profile,
    inclusive (anywhere on the stack) and self (top of the stack), in % of all samples;
    frames on more than 60% of the samples (the process's main, the event loop) left out."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        if frames[0].startswith("Thread._bootstrap") and frames[-1] in IDLE_FRAMES:
            continue  # a worker thread blocked on its queue, which py-spy counts as running
        total += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    # the frames every sample has (main, the event loop) say nothing
    ranked = sorted(
        ((f, n) for f, n in inclusive.items() if n < 0.6 * total), key=lambda kv: -kv[1]
    )[:top]
    return [
        {
            "function": frame,
            "inclusive_pct": round(100 * n / total, 1),
            "self_pct": round(100 * own.get(frame, 0) / total, 1),
        }
        for frame, n in ranked
    ]


def added(target: dict[str, Any], direct: dict[str, Any], q: str) -> float:
    return round(target["latency_ms"][q] - direct["latency_ms"][q], 3)


def latency_rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per latency run of a gateway, beside the direct run taken just before it."""
    rows = []
    for name, run in runs.items():
        target, _, load = name.partition("/")
        direct = runs.get(f"direct/{load}@{target}")
        if target == "direct" or direct is None:
            continue
        timings = run["server_timing_ms"]
        rows.append(
            {
                "target": target,
                "load": "c=1" if load == "c1" else f"{run['rps_target']:g} req/s",
                "ok_rps": run["ok_rps"],
                "direct_p50": direct["latency_ms"]["p50"],
                "direct_p99": direct["latency_ms"]["p99"],
                "p50": run["latency_ms"]["p50"],
                "p99": run["latency_ms"]["p99"],
                "added_p50": added(run, direct, "p50"),
                "added_p99": added(run, direct, "p99"),
                "non_2xx": run["non_2xx"],
                "errors": run["errors"],
                "admission_ms": timings.get("admission"),
                "upstream_ms": timings.get("upstream"),
                "litellm_overhead_ms": timings.get("x-litellm-overhead-duration-ms"),
                "server_cpu_ms_per_request": run.get("server_cpu_ms_per_request"),
            }
        )
    return rows


def throughput_rows(runs: dict[str, dict[str, Any]], concurrency: list[int]) -> dict[str, Any]:
    """Per target: ok req/s at each concurrency, the best, server CPU per request."""
    rows: dict[str, Any] = {}
    for target in ("direct", "tenantserve", "litellm"):
        by_c = {c: runs[f"{target}/c{c}"] for c in concurrency if f"{target}/c{c}" in runs}
        if not by_c:
            continue
        best_c = max(by_c, key=lambda c: by_c[c]["ok_rps"])
        c1 = runs.get(f"{target}/c1")
        rows[target] = {
            "ok_rps_by_concurrency": {str(c): r["ok_rps"] for c, r in by_c.items()},
            "max_ok_rps": by_c[best_c]["ok_rps"],
            "at_concurrency": best_c,
            "server_cpu_ms_per_request_c1": c1.get("server_cpu_ms_per_request") if c1 else None,
            "server_cpu_ms_per_request_at_max": by_c[best_c].get("server_cpu_ms_per_request"),
        }
    ts, lt = rows.get("tenantserve"), rows.get("litellm")
    if ts and lt and lt["max_ok_rps"]:
        ts["vs_litellm"] = round(ts["max_ok_rps"] / lt["max_ok_rps"], 1)
    return rows


def verdict(latency: list[dict[str, Any]], throughput: dict[str, Any], rate: float) -> dict:
    """The issue's targets against tenantserve's numbers."""
    at_rate = next(
        (r for r in latency if r["target"] == "tenantserve" and r["load"] == f"{rate:g} req/s"),
        None,
    )
    out: dict[str, Any] = {}
    if at_rate is not None:
        out["added_p50_ms_at_rate"] = at_rate["added_p50"]
        out["added_p50_le_1ms"] = at_rate["added_p50"] <= 1.0 and not at_rate["non_2xx"]
        out["added_p99_ms_at_rate"] = at_rate["added_p99"]
        out["added_p99_le_5ms"] = at_rate["added_p99"] <= 5.0 and not at_rate["non_2xx"]
        out["admission_ms_at_rate"] = at_rate["admission_ms"]
    if "tenantserve" in throughput and "vs_litellm" in throughput["tenantserve"]:
        out["rps_vs_litellm"] = throughput["tenantserve"]["vs_litellm"]
        out["rps_ge_20x_litellm"] = out["rps_vs_litellm"] >= 20
    return out


NAMES = {"direct": "direct (no gateway)", "tenantserve": "tenantserve", "litellm": "LiteLLM proxy"}


def fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def pair(d: dict[str, Any] | None, a: str = "p50", b: str = "p99", digits: int = 2) -> str:
    return "–" if not d else f"{fmt(d.get(a), digits)} / {fmt(d.get(b), digits)}"


def tables(latency: list[dict[str, Any]], throughput: dict[str, Any]) -> str:
    lines = [
        "| target | load | ok req/s | direct p50 / p99 ms | target p50 / p99 ms | "
        "added p50 / p99 ms | non-2xx | admission p50 / p99 ms | upstream p50 / p99 ms |",
        "|---|---|---:|---|---|---|---|---|---|",
    ]
    for r in latency:
        non_2xx = ", ".join(f"{n}×{s}" for s, n in r["non_2xx"].items()) or "0"
        lines.append(
            f"| {NAMES[r['target']]} | {r['load']} | {fmt(r['ok_rps'], 0)} "
            f"| {pair(r, 'direct_p50', 'direct_p99')} | {pair(r)} "
            f"| {pair(r, 'added_p50', 'added_p99')} | {non_2xx} "
            f"| {pair(r['admission_ms'], digits=3)} | {pair(r['upstream_ms'])} |"
        )
    concurrency = sorted({c for t in throughput.values() for c in t["ok_rps_by_concurrency"]})
    lines += [
        "",
        "| target | "
        + " | ".join(f"req/s at c={c}" for c in concurrency)
        + " | max req/s per worker | server CPU ms/req (c=1 / at max) | vs LiteLLM |",
        "|---|" + "---:|" * len(concurrency) + "---:|---|---:|",
    ]
    for target, t in throughput.items():
        by_c = t["ok_rps_by_concurrency"]
        lines.append(
            f"| {NAMES[target]} | "
            + " | ".join(fmt(by_c.get(str(c)), 0) for c in concurrency)
            + f" | {fmt(t['max_ok_rps'], 0)} "
            f"| {pair(t, 'server_cpu_ms_per_request_c1', 'server_cpu_ms_per_request_at_max', 3)} "
            f"| {fmt(t.get('vs_litellm'), 1) + '×' if 'vs_litellm' in t else '–'} |"
        )
    return "\n".join(lines)


def run_target(
    bench: Bench,
    name: str,
    server: Server,
    key: str,
    upstream: Server,
    rates: list[float],
    header_metrics: tuple[str, ...] = (),
) -> None:
    """c=1 and each open-loop rate right after the same load direct, then closed loops."""
    bench.load(f"direct/c1@{name}", upstream, "direct", concurrency=1)
    bench.load(f"{name}/c1", server, key, concurrency=1, header_metrics=header_metrics)
    for rate in rates:
        bench.load(f"direct/open{rate:g}@{name}", upstream, "direct", rps=rate)
        bench.load(f"{name}/open{rate:g}", server, key, rps=rate, header_metrics=header_metrics)
    for c in bench.args.concurrency:
        bench.load(f"{name}/c{c}", server, key, concurrency=c, header_metrics=header_metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted s per run")
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[500.0, 250.0],
        help="tenantserve open-loop req/s; the first is the target's (500)",
    )
    parser.add_argument("--litellm-rate", type=float, default=40.0, help="LiteLLM open loop")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--targets", nargs="+", default=["tenantserve", "litellm"])
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also py-spy the tenantserve process in one more closed-loop run (needs py-spy)",
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="only the py-spy'd tenantserve run (no measured runs; implies --profile)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "gateway.json")
    args = parser.parse_args()
    if args.profile_only:
        args.profile, args.targets = True, ["tenantserve"]

    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(cpus) < 2:
        server_cpus: set[int] | None = None
        client_cpus: set[int] | None = None
    else:
        server_cpus, client_cpus = {cpus[-1]}, set(cpus[:-1])
    log(f"CPUs {cpus}; server under test on {server_cpus}, loadgen + upstream on {client_cpus}")

    started_s = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, client_cpus)
    notes: list[str] = []
    profile: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="ts-gateway-bench-"))
    with ExitStack() as stack:
        upstream = start_upstream(work, client_cpus)
        stack.callback(upstream.stop)
        log("[direct] baseline against the fake upstream")
        for c in [] if args.profile_only else args.concurrency:
            bench.load(f"direct/c{c}", upstream, "direct", concurrency=c)

        if "tenantserve" in args.targets:
            if tenantserve_has_pools():
                server, key = start_tenantserve(upstream, work, server_cpus, args.redis_url)
                stack.callback(server.stop)
                if not args.profile_only:
                    run_target(bench, "tenantserve", server, key, upstream, args.rate)
                if args.profile:
                    collapsed = args.out.with_name("gateway-tenantserve-profile.txt")
                    c = args.concurrency[0]
                    log(f"[tenantserve] py-spy profile at concurrency {c} -> {collapsed}")
                    bench.load(
                        f"tenantserve-profiled/c{c}", server, key, concurrency=c, profile=collapsed
                    )
                    profile = profile_summary(collapsed)
                    for p in profile[:20]:
                        share = f"{p['inclusive_pct']:5.1f}% incl {p['self_pct']:5.1f}% self"
                        log(f"  {share}  {p['function']}")
                server.stop()
            else:
                notes.append("tenantserve: `tenantserve up --pools/--no-engine` not available")
                log(notes[-1])

        if "litellm" in args.targets:
            server, key = start_litellm(upstream, work, server_cpus)
            stack.callback(server.stop)
            overhead = ("x-litellm-overhead-duration-ms",)
            run_target(bench, "litellm", server, key, upstream, [args.litellm_rate], overhead)
            server.stop()

    latency = latency_rows(bench.runs)
    throughput = throughput_rows(bench.runs, args.concurrency)
    result = {
        "machine": {
            "cpus": len(cpus),
            "cpu_model": cpu_model(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "client_cpus": sorted(client_cpus) if client_cpus else None,
            "litellm_version": LITELLM_VERSION,
            "litellm_config": "master_key auth; one openai/ deployment; no database",
        },
        "notes": notes,
        "targets": verdict(latency, throughput, args.rate[0]),
        "latency": latency,
        "throughput": throughput,
        "tenantserve_profile": profile,
        "runs": bench.runs,
        "wall_s": round(time.perf_counter() - started_s, 1),
    }
    args.out.write_text(json.dumps(result, indent=2))
    if args.keep_logs:
        log(f"server logs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(tables(latency, throughput))
    print(f"\ntargets: {json.dumps(result['targets'])}")
    for note in notes:
        print(f"\n{note}")
    print(f"\nwall time {result['wall_s']:.0f} s; raw results in {args.out}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
