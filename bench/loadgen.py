"""HTTP load generator for the gateway benchmark: open loop (fixed rate) or closed loop.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:8000 --key sk-... \\
        (--rps 500 | --concurrency 32) [--duration 10] [--warmup 2] [--model fake-model]

Each request is `POST /v1/chat/completions` with a small chat body (max_tokens 16) over
HTTP/1.1 keep-alive connections, written and parsed by hand on raw asyncio streams
(uvloop), so the client spends little CPU per request and stays in its own process.

- open loop (`--rps R`): request i is due at start + i/R and is sent then whether or
  not earlier ones have answered, on an idle connection or a new one (up to
  `--max-connections`; past that it waits for one). Latency counts from the *due* time,
  so a server that falls behind shows its queueing (no coordinated omission); the
  service time from the actual send and the client's send lag are reported beside it.
- closed loop (`--concurrency C`): C connections, each sending its next request as soon
  as the previous one answers: the most the server can take.

Requests due (open) or sent (closed) during the first `--warmup` seconds are not
counted. Prints one JSON line on stdout (progress on stderr): counts, achieved req/s,
latency percentiles in ms, and p50/p99 of every `server-timing` entry seen
(`name;dur=ms, ...`) and of any numeric header named with `--header-metric`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvloop

DRAIN_S = 10.0
# Idle connections older than this are not reused: servers close idle keep-alive
# connections (uvicorn after 5 s), and a request written into one that is closing fails.
MAX_IDLE_S = 2.0


class ConnectionClosed(Exception):
    """The server closed the connection (or asked to) before or during a response."""


@dataclass(frozen=True)
class Response:
    status: int
    # header name (lower case) -> raw value, only for the headers the caller asked for
    headers: dict[bytes, bytes]
    keep_alive: bool


class Connection:
    """One HTTP/1.1 keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used_s = time.perf_counter()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, payload: bytes, wanted: frozenset[bytes]) -> Response:
        """Send `payload` (a whole request) and read the whole response."""
        self.writer.write(payload)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            raise ConnectionClosed("closed before the response") from e
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = False
        keep_alive = True
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep_alive = b"close" not in value.lower()
            elif name in wanted:
                headers[name] = value.strip()
        if chunked:
            await self._read_chunked()
        elif length >= 0:
            await self.reader.readexactly(length)
        else:  # no length: the body runs to the end of the connection
            await self.reader.read()
            keep_alive = False
        self.last_used_s = time.perf_counter()
        return Response(status, headers, keep_alive)

    async def _read_chunked(self) -> None:
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return
            await self.reader.readexactly(size + 2)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Stats:
    """What the measured requests (those past the warm-up) produced."""

    latency_s: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)
    send_lag_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    timings_ms: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sent: int = 0

    def record(
        self, due_s: float, sent_s: float, done_s: float, response: Response, header_metrics: set
    ) -> None:
        self.latency_s.append(done_s - due_s)
        self.service_s.append(done_s - sent_s)
        self.send_lag_s.append(sent_s - due_s)
        self.statuses[response.status] += 1
        for name, value in response.headers.items():
            if name == b"server-timing":
                for entry in value.split(b","):
                    parts = entry.strip().split(b";")
                    for param in parts[1:]:
                        key, _, dur = param.strip().partition(b"=")
                        if key == b"dur":
                            self.timings_ms[parts[0].decode()].append(float(dur))
            elif name in header_metrics:
                with contextlib.suppress(ValueError):
                    self.timings_ms[name.decode()].append(float(value))


def pct(values: list[float], q: float, scale: float = 1.0) -> float | None:
    """Nearest-rank percentile (q in 0..100), times `scale`; None when there is no value."""
    if not values:
        return None
    xs = sorted(values)
    return round(xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))] * scale, 3)


def summary(values_s: list[float]) -> dict[str, float | None]:
    return {
        "p50": pct(values_s, 50, 1e3),
        "p90": pct(values_s, 90, 1e3),
        "p99": pct(values_s, 99, 1e3),
        "max": pct(values_s, 100, 1e3),
        "mean": round(sum(values_s) / len(values_s) * 1e3, 3) if values_s else None,
    }


class LoadGenerator:
    """Sends the benchmark request at `url`; `open_loop` and `closed_loop` return Stats."""

    def __init__(
        self, url: str, key: str, model: str, header_metrics: list[str], max_connections: int
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        body = json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 16,
            }
        ).encode()
        path = (parts.path.rstrip("/") or "") + "/v1/chat/completions"
        self.payload = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n"
            "Accept: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.header_metrics = {h.lower().encode() for h in header_metrics}
        self.wanted = frozenset({b"server-timing", *self.header_metrics})
        self.max_connections = max_connections
        self.idle: list[Connection] = []
        self.waiters: list[asyncio.Future[Connection | None]] = []
        self.num_open = 0
        self.max_open = 0

    async def _acquire(self) -> Connection:
        while True:
            if self.idle:
                conn = self.idle.pop()
                if time.perf_counter() - conn.last_used_s < MAX_IDLE_S:
                    return conn
                conn.close()  # the server may be closing it (uvicorn: after 5 s idle)
                self.num_open -= 1
                continue
            if self.num_open < self.max_connections:
                self.num_open += 1
                self.max_open = max(self.max_open, self.num_open)
                try:
                    return await Connection.open(self.host, self.port)
                except BaseException:
                    self.num_open -= 1
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            conn = await waiter
            if conn is not None:
                return conn

    def _release(self, conn: Connection | None) -> None:
        """Hand `conn` back (None: it was closed, a new one may be opened)."""
        if conn is None:
            self.num_open -= 1
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self.idle.append(conn)

    async def _one(self, stats: Stats, due_s: float, measured: bool) -> None:
        conn: Connection | None = None
        try:
            conn = await self._acquire()
            sent_s = time.perf_counter()
            response = await conn.request(self.payload, self.wanted)
            done_s = time.perf_counter()
            if not response.keep_alive:
                conn.close()
                conn = None
        except (OSError, ConnectionClosed, asyncio.IncompleteReadError, ValueError) as e:
            if conn is not None:
                conn.close()
                conn = None
            if measured:
                stats.errors[type(e).__name__] += 1
            self._release(None)
            return
        self._release(conn)
        if measured:
            stats.record(due_s, sent_s, done_s, response, self.header_metrics)

    async def open_loop(self, rate_rps: float, duration_s: float, warmup_s: float) -> Stats:
        stats = Stats()
        for _ in range(min(self.max_connections, max(4, int(rate_rps * 0.01)))):
            self.num_open += 1
            self.idle.append(await Connection.open(self.host, self.port))
        self.max_open = self.num_open
        total = int((warmup_s + duration_s) * rate_rps)
        first_measured = int(warmup_s * rate_rps)
        tasks: set[asyncio.Task[None]] = set()
        start_s = time.perf_counter() + 0.01
        i = 0
        while i < total:
            now_s = time.perf_counter()
            while i < total and start_s + i / rate_rps <= now_s:
                measured = i >= first_measured
                stats.sent += measured
                task = asyncio.create_task(self._one(stats, start_s + i / rate_rps, measured))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.sleep(max(0.0, start_s + i / rate_rps - time.perf_counter()))
        await self._drain(tasks, stats)
        return stats

    async def closed_loop(self, concurrency: int, duration_s: float, warmup_s: float) -> Stats:
        stats = Stats()
        self.max_connections = concurrency
        start_s = time.perf_counter()
        measure_from_s = start_s + warmup_s
        end_s = measure_from_s + duration_s

        async def worker() -> None:
            while (now_s := time.perf_counter()) < end_s:
                measured = now_s >= measure_from_s
                stats.sent += measured
                await self._one(stats, now_s, measured)

        tasks = {asyncio.create_task(worker()) for _ in range(concurrency)}
        await asyncio.sleep(max(0.0, end_s - time.perf_counter()))
        await self._drain(tasks, stats)
        return stats

    async def _drain(self, tasks: set[asyncio.Task[None]], stats: Stats) -> None:
        """Wait up to DRAIN_S for `tasks` (those still running count as unfinished)."""
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=DRAIN_S)
            for task in pending:
                task.cancel()
            if pending:
                stats.errors["unfinished"] += len(pending)
        for conn in self.idle:
            conn.close()
        self.idle.clear()


def report(stats: Stats, args: argparse.Namespace, wall_s: float, max_open: int) -> dict[str, Any]:
    ok = sum(n for status, n in stats.statuses.items() if 200 <= status < 300)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out: dict[str, Any] = {
        "mode": "open" if args.rps else "closed",
        "url": args.url,
        "rps_target": args.rps,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "sent": stats.sent,
        "ok": ok,
        "non_2xx": {str(s): n for s, n in sorted(stats.statuses.items()) if not 200 <= s < 300},
        "errors": dict(stats.errors),
        "achieved_rps": round(sum(stats.statuses.values()) / args.duration, 1),
        "ok_rps": round(ok / args.duration, 1),
        "latency_ms": summary(stats.latency_s),
        "server_timing_ms": {
            name: {"p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99), "n": len(v)}
            for name, v in sorted(stats.timings_ms.items())
        },
        "connections": max_open,
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wall_s": round(wall_s, 2),
    }
    if args.rps:
        out["service_ms"] = summary(stats.service_s)
        out["send_lag_ms"] = {
            "p50": pct(stats.send_lag_s, 50, 1e3),
            "p99": pct(stats.send_lag_s, 99, 1e3),
        }
    return out


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    gen = LoadGenerator(args.url, args.key, args.model, args.header_metric, args.max_connections)
    load = f"{args.rps} req/s" if args.rps else f"concurrency {args.concurrency}"
    print(
        f"loadgen: {args.url} {load}, {args.warmup:g} s warm-up + {args.duration:g} s",
        file=sys.stderr,
    )
    start_s = time.perf_counter()
    if args.rps:
        stats = await gen.open_loop(args.rps, args.duration, args.warmup)
    else:
        stats = await gen.closed_loop(args.concurrency, args.duration, args.warmup)
    return report(stats, args, time.perf_counter() - start_s, gen.max_open)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--key", default="sk-bench", help="Bearer token")
    parser.add_argument("--model", default="fake-model")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--rps", type=float, help="open loop at this many requests/s")
    load.add_argument("--concurrency", type=int, help="closed loop with this many connections")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted")
    parser.add_argument("--max-connections", type=int, default=1024, help="open loop cap")
    parser.add_argument(
        "--header-metric",
        action="append",
        default=[],
        help="numeric response header (ms) to summarise like a server-timing entry",
    )
    args = parser.parse_args()
    result = uvloop.run(amain(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
