"""Metering pipeline benchmark: outbox → shipper → JetStream → aggregator → PostgreSQL.

    .venv/bin/python bench/metering.py [--events 200000] [--tenants 100] [--paced-rate 20000]

Two runs: the producer appending as fast as it can, then paced at `--paced-rate` events/s
(open loop). Each run gets a fresh PostgreSQL database, stream and outbox; the shipper
and the aggregator are their own processes (`tenantserve metering ship|aggregate`, the
production entry points, default settings), the producer is this process (concurrent
`Outbox.append_many` of 100 events, as the gateway's requests would, group commit).

Reported per run:
- events/s end to end: N over (first append → the ledger holding all N);
- lost / double: N − ledger rows, and the hour buckets' request and token sums against
  what was produced (a double count would show there, the ledger cannot hold one twice);
- visibility: every 50 ms the last event appended is sampled and looked for (every
  5 ms) in the ledger; p50/p99/max of (visible − its append returned);
- CPU per stage (user+sys seconds, and µs per event): this producer process, the
  shipper, the aggregator, nats-server and all postgres processes (from /proc; others'
  work on a shared machine lands in the last two), which names the bottleneck.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tenantserve.metering.events import UsageEvent, UsageStatus  # noqa: E402
from tenantserve.metering.outbox import OUTBOX_FILE, Outbox  # noqa: E402
from tenantserve.metering.stream import UsageStream  # noqa: E402
from tenantserve.storage.migrations import migrate  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CHUNK = 100


@dataclass
class Result:
    name: str
    events: int
    wall_s: float = 0.0
    ledger: int = 0
    bucket_requests: int = 0
    bucket_output_tokens: int = 0
    expected_output_tokens: int = 0
    visibility_s: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _pids(comm: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _group_cpu_s(comm: str) -> float:
    return sum(_cpu_s(pid) for pid in _pids(comm))


def _chunk(run_id: str, first: int, n: int, tenants: int, now: float) -> list[UsageEvent]:
    """Events `first`.. of a run, ending now (built at append time, as a gateway would)."""
    return [
        UsageEvent.for_request(
            f"bench-{run_id}-{i}",
            tenant_id=f"ten_{i % tenants:03d}",
            model="smol@1.0.0",
            adapter="",
            pool="shared",
            region="us",
            tier="standard",
            status=UsageStatus.COMPLETED,
            input_tokens=100 + i % 50,
            cached_input_tokens=10,
            output_tokens=i % 40,
            started_at=now - 0.5,
            first_token_at=now - 0.4,
            ended_at=now,
            engine_seconds=0.01,
        )
        for i in range(first, min(n, first + CHUNK))
    ]


async def _produce(outbox: Outbox, n: int, tenants: int, rate: float, last: list) -> None:
    """Append n events in chunks (4 concurrent appenders at full speed; open loop when
    paced); `last` holds (event_id, appended_at) of the latest append."""
    run_id = uuid.uuid4().hex[:8]
    start = time.perf_counter()
    todo = iter(range(0, n, CHUNK))

    async def appender() -> None:
        for first in todo:
            if rate:
                due = start + first / rate
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
            chunk = _chunk(run_id, first, n, tenants, time.time())
            await outbox.append_many(chunk)
            last[:] = [chunk[-1].event_id, time.perf_counter()]

    await asyncio.gather(*(appender() for _ in range(1 if rate else 4)))


async def _watch_visibility(pg: asyncpg.Connection, last: list, done: asyncio.Event, out: list):
    """Every 50 ms sample the latest appended event; every 5 ms look the outstanding
    samples up in the ledger; `out` gets (visible − appended) of each."""
    waiting: dict[str, float] = {}
    next_sample = time.perf_counter()
    while not done.is_set() or waiting:
        now = time.perf_counter()
        if last and now >= next_sample and not done.is_set():
            waiting.setdefault(last[0], last[1])
            next_sample = now + 0.05
        if waiting:
            found = await pg.fetch(
                "SELECT event_id FROM usage_events WHERE event_id = ANY($1::text[])",
                list(waiting),
            )
            seen = time.perf_counter()
            for row in found:
                out.append(seen - waiting.pop(row["event_id"]))
        await asyncio.sleep(0.005)


async def run(name: str, args: argparse.Namespace, rate: float) -> Result:
    result = Result(name, args.events)
    db = f"bench_metering_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.postgres)
    await admin.execute(f'CREATE DATABASE "{db}"')
    url = f"{args.postgres.rsplit('/', 1)[0]}/{db}"  # migrate/the CLI pick asyncpg
    tag = uuid.uuid4().hex[:8]
    stream = UsageStream(name=f"BENCH_USAGE_{tag}", subject_prefix=f"bench.{tag}.usage")
    data_dir = Path(tempfile.mkdtemp(prefix="bench-metering-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        await migrate(url)
        result.expected_output_tokens = sum(i % 40 for i in range(args.events))
        env = {
            **os.environ,
            "TENANTSERVE_DATA_DIR": str(data_dir),
            "TENANTSERVE_DATABASE_URL": url,
            "TENANTSERVE_NATS_URL": args.nats_url,
            "TENANTSERVE_OUTBOX_SYNCHRONOUS": args.synchronous,
        }
        stream_args = ["--stream", stream.name, "--subject-prefix", stream.subject_prefix]
        outbox = Outbox(data_dir / OUTBOX_FILE, args.synchronous)
        for stage in ("aggregate", "ship"):
            procs[stage] = subprocess.Popen(
                [sys.executable, "-m", "tenantserve.cli.main", "metering", stage, *stream_args],
                env=env,
                cwd=REPO,
                stderr=open(data_dir / f"{stage}.log", "wb"),  # noqa: SIM115
            )
        pg = await asyncpg.connect(url)
        await _wait_for_log(data_dir / "aggregate.log", "aggregating")
        await _wait_for_log(data_dir / "ship.log", "shipping")
        cpu0 = _cpu_snapshot(procs)
        last: list = []
        done = asyncio.Event()
        visibility: list[float] = []
        probe = await asyncpg.connect(url)
        watcher = asyncio.create_task(_watch_visibility(probe, last, done, visibility))
        start = time.perf_counter()
        await _produce(outbox, args.events, args.tenants, rate, last)
        produced_s = time.perf_counter() - start
        while await pg.fetchval("SELECT count(*) FROM usage_events") < args.events:
            await asyncio.sleep(0.05)
            if time.perf_counter() - start > 600:
                break
        result.wall_s = time.perf_counter() - start
        done.set()
        await watcher
        await probe.close()
        cpu1 = _cpu_snapshot(procs)
        result.cpu_s = {k: cpu1[k] - cpu0[k] for k in cpu0}
        result.visibility_s = visibility
        result.ledger = await pg.fetchval("SELECT count(*) FROM usage_events")
        row = await pg.fetchrow(
            "SELECT sum(requests) AS r, sum(output_tokens) AS o FROM usage_buckets "
            "WHERE granularity = 'hour'"
        )
        result.bucket_requests, result.bucket_output_tokens = int(row["r"]), int(row["o"])
        print(
            f"{name}: produced in {produced_s:.1f} s, counted in {result.wall_s:.1f} s",
            file=sys.stderr,
        )
        await pg.close()
        outbox.close()
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=30)
        nc = await nats.connect(args.nats_url)
        await nc.jetstream().delete_stream(stream.name)
        await nc.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _cpu_snapshot(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    return {
        "producer": time.process_time(),
        "shipper": _cpu_s(procs["ship"].pid),
        "aggregator": _cpu_s(procs["aggregate"].pid),
        "nats-server": _group_cpu_s("nats-server"),
        "postgres": _group_cpu_s("postgres"),
    }


async def _wait_for_log(path: Path, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never said {text!r}:\n{path.read_text()}")
        await asyncio.sleep(0.1)


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--paced-rate", type=float, default=20_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    args = parser.parse_args()
    results = [
        await run("full speed", args, 0.0),
        await run(f"paced {args.paced_rate:,.0f}/s", args, args.paced_rate),
    ]
    print(
        f"\n{args.events:,} events, {args.tenants} tenants, outbox synchronous={args.synchronous}\n"
    )
    print("| run | events/s end to end | lost | double | visible p50 (ms) | p99 | max | samples |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        lost = r.events - r.ledger
        double = r.bucket_requests - r.ledger
        tokens_ok = r.bucket_output_tokens == r.expected_output_tokens
        print(
            f"| {r.name} | {r.events / r.wall_s:,.0f} | {lost} | {double}"
            f"{'' if tokens_ok else ' (token sums differ!)'} | {_ms(r.visibility_s, 0.5)} | "
            f"{_ms(r.visibility_s, 0.99)} | {_ms(r.visibility_s, 1.0)} | {len(r.visibility_s)} |"
        )
    print("\nCPU seconds per stage (µs per event) over the run:\n")
    stages = list(results[0].cpu_s)
    print("| run | " + " | ".join(stages) + " | wall s |")
    print("|---|" + "---:|" * (len(stages) + 1))
    for r in results:
        cells = [f"{r.cpu_s[s]:.1f} ({r.cpu_s[s] / r.events * 1e6:.0f})" for s in stages]
        print(f"| {r.name} | " + " | ".join(cells) + f" | {r.wall_s:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
