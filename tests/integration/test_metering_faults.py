"""Exactly once under faults: the shipper and the aggregator run as real processes
(`tenantserve metering ship|aggregate`) while this test appends usage events to the
outbox without pause and SIGKILLs them at random points, over and over; or it cuts the
aggregator's database connections. Once the outbox drains, the ledger and every tenant's
totals must equal exactly what was produced: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import nats
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantserve.metering.events import UsageEvent
from tenantserve.metering.outbox import OUTBOX_FILE, Outbox
from tenantserve.metering.report import Counters, Granularity, truncate
from tenantserve.metering.store import UsageStore
from tenantserve.metering.stream import UsageStream
from tenantserve.storage.database import create_engine
from tenantserve.storage.migrations import migrate
from tests.helpers.databases import drop_postgres_database, fresh_postgres_database
from tests.helpers.services import NATS_URL, free_port, require_service
from tests.helpers.usage import usage_event

REPO_ROOT = Path(__file__).resolve().parents[2]
TENANTS = 20
ACK_WAIT_S = 2.0  # redeliveries of a killed aggregator's batches come back this fast
KILL_PHASE_S = 40.0
MIN_KILLS = 20


class Stage:
    """One `tenantserve metering <command>` process, restarted after each kill."""

    def __init__(self, command: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.command, self.args, self.env, self.log = command, args, env, log
        self.process: asyncio.subprocess.Process | None = None
        self.kills = 0

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tenantserve.cli.main",
                "metering",
                self.command,
                *self.args,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=log,
            )

    async def kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self.kills += 1

    async def stop(self) -> int:
        """SIGTERM, and the exit code (0: it stopped cleanly)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            raise


class Producer:
    """Appends events to the outbox without pause (a few thousand per second)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.produced: list[UsageEvent] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self._stop.is_set():
            now = time.time()
            batch = [_event(i, now) for i in range(n, n + 20)]
            await self.outbox.append_many(batch)
            self.produced += batch
            n += len(batch)
            await asyncio.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()


async def _terminate_others(conn: AsyncConnection) -> int:
    """Terminate every other connection to this database; how many there were."""
    result = await conn.execute(
        text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )
    return int(result.scalar_one())


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    return f"--- {log.name}:\n" + "\n".join(text.splitlines()[-lines:])


def _event(i: int, now: float) -> UsageEvent:
    return usage_event(
        i,
        ended_at=now,
        tenant_id=f"ten_{i % TENANTS}",
        output_tokens=i % 7,
        engine_seconds=0.125,
    )


@pytest.fixture
def nats_url() -> str:
    parts = urlsplit(NATS_URL)
    require_service("NATS", parts.hostname or "127.0.0.1", parts.port or 4222)
    return NATS_URL


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
async def stream(nats_url: str) -> AsyncIterator[UsageStream]:
    tag = uuid.uuid4().hex[:12]
    usage_stream = UsageStream(name=f"TEST_FAULTS_{tag}", subject_prefix=f"test.{tag}.usage")
    yield usage_stream
    nc = await nats.connect(nats_url)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_stream(usage_stream.name)
    await nc.close()


@pytest.fixture
async def pipeline(
    tmp_path: Path, nats_url: str, postgres_url: str, stream: UsageStream
) -> AsyncIterator[tuple[Stage, Stage, Outbox, UsageStore]]:
    """The shipper and aggregator processes (not started), the outbox they share with
    the producer, and the store they count into."""
    await migrate(postgres_url)
    env = {
        **os.environ,
        "TENANTSERVE_DATA_DIR": str(tmp_path / "data"),
        "TENANTSERVE_DATABASE_URL": postgres_url,
        "TENANTSERVE_NATS_URL": nats_url,
        "TENANTSERVE_OUTBOX_SYNCHRONOUS": "NORMAL",  # survives SIGKILL
    }
    stream_args = ["--stream", stream.name, "--subject-prefix", stream.subject_prefix]
    shipper = Stage("ship", stream_args, env, tmp_path / "ship.log")
    aggregator = Stage(
        "aggregate",
        [*stream_args, "--durable", "faults", "--ack-wait-s", str(ACK_WAIT_S)],
        env,
        tmp_path / "aggregate.log",
    )
    outbox = Outbox(tmp_path / "data" / OUTBOX_FILE, "NORMAL")
    engine = create_engine(postgres_url)
    try:
        yield shipper, aggregator, outbox, UsageStore(engine)
    finally:
        for stage in (shipper, aggregator):
            if stage.process is not None and stage.process.returncode is None:
                stage.process.kill()
                await stage.process.wait()
        outbox.close()
        await engine.dispose()


async def _kill_at_random(stage: Stage, rnd: random.Random, until_s: float) -> None:
    """Start `stage`, SIGKILL it after a random 0.3–3.5 s (during start-up, mid-batch,
    between a commit and its acks...), start it again, until `until_s`."""
    while time.monotonic() < until_s:
        await stage.start()
        await asyncio.sleep(rnd.uniform(0.3, 3.5))
        await stage.kill()
    await stage.start()


async def _wait_until_drained(
    outbox: Outbox, store: UsageStore, produced: int, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if outbox.pending() == 0 and await store.count_events() >= produced:
            await asyncio.sleep(2 * ACK_WAIT_S)  # redeliveries still in flight land now
            return
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"not drained in {timeout_s} s: {outbox.pending()} in the outbox, "
        f"{await store.count_events()} of {produced} counted"
    )


async def _assert_exactly_once(store: UsageStore, produced: list[UsageEvent]) -> None:
    assert len({e.event_id for e in produced}) == len(produced)
    assert await store.count_events() == len(produced)  # 0 lost, 0 double
    expected: dict[str, Counters] = {}
    for e in produced:
        expected.setdefault(e.tenant_id, Counters()).add_event(e)
    since = truncate(min(e.ended for e in produced), Granularity.HOUR)
    for tenant_id, want in expected.items():
        got = await store.totals(tenant_id, since)
        assert got.engine_seconds == pytest.approx(want.engine_seconds)
        got.engine_seconds = want.engine_seconds
        assert got == want, tenant_id


@pytest.mark.timeout(300)
async def test_no_event_is_lost_or_doubled_when_shipper_and_aggregator_are_killed_at_random(
    pipeline: tuple[Stage, Stage, Outbox, UsageStore],
) -> None:
    shipper, aggregator, outbox, store = pipeline
    producer = Producer(outbox)
    producing = asyncio.create_task(producer.run())
    rnd = random.Random()
    until_s = time.monotonic() + KILL_PHASE_S
    try:
        await asyncio.gather(
            _kill_at_random(shipper, rnd, until_s), _kill_at_random(aggregator, rnd, until_s)
        )
    finally:
        producer.stop()
        await producing
    assert shipper.kills + aggregator.kills >= MIN_KILLS
    assert min(shipper.kills, aggregator.kills) >= MIN_KILLS // 4
    await _wait_until_drained(outbox, store, len(producer.produced))
    assert await shipper.stop() == 0
    assert await aggregator.stop() == 0
    await _assert_exactly_once(store, producer.produced)


@pytest.mark.timeout(240)
async def test_no_event_is_lost_or_doubled_when_the_database_drops_the_aggregators_connections(
    pipeline: tuple[Stage, Stage, Outbox, UsageStore],
) -> None:
    shipper, aggregator, outbox, store = pipeline
    await shipper.start()
    await aggregator.start()
    producer = Producer(outbox)
    producing = asyncio.create_task(producer.run())
    rnd = random.Random()
    terminated = 0
    try:
        # At least 15 s, and until the aggregator has lost its connections 5 times (a
        # cold start, or its back-off after a loss, may leave it without one for a while).
        started = time.monotonic()
        while time.monotonic() - started < 15 or (
            terminated < 5 and time.monotonic() - started < 90
        ):
            await asyncio.sleep(rnd.uniform(0.2, 0.8))
            async with store.engine.connect() as conn:
                terminated += await _terminate_others(conn)
    finally:
        producer.stop()
        await producing
    assert terminated >= 5, (
        f"the aggregator lost its connections {terminated} times in 90 s: "
        f"{await store.count_events()} of {len(producer.produced)} events counted, "
        f"{outbox.pending()} in the outbox\n{_tail(aggregator.log)}\n{_tail(shipper.log)}"
    )
    await _wait_until_drained(outbox, store, len(producer.produced))
    assert await shipper.stop() == 0
    assert await aggregator.stop() == 0
    await _assert_exactly_once(store, producer.produced)


@pytest.mark.timeout(180)
async def test_the_aggregator_waits_for_a_database_that_comes_up_after_it(
    pipeline: tuple[Stage, Stage, Outbox, UsageStore], postgres_url: str
) -> None:
    """Started before its database answers (it used to exit 1 at once, or at a connection
    dropped during its migration): it retries until it can, then counts every event."""
    shipper, aggregator, outbox, store = pipeline
    real = urlsplit(postgres_url)
    port = free_port()
    aggregator.env["TENANTSERVE_DATABASE_URL"] = real._replace(
        netloc=real.netloc.replace(f":{real.port}", f":{port}")
    ).geturl()
    await aggregator.start()
    await asyncio.sleep(3)
    assert aggregator.process is not None and aggregator.process.returncode is None, _tail(
        aggregator.log
    )
    assert "the aggregator is not ready" in aggregator.log.read_text()
    async with _tcp_proxy(port, real.hostname or "127.0.0.1", real.port or 5432):
        await shipper.start()
        producer = Producer(outbox)
        producing = asyncio.create_task(producer.run())
        await asyncio.sleep(1)
        producer.stop()
        await producing
        await _wait_until_drained(outbox, store, len(producer.produced))
        assert await shipper.stop() == 0
        assert await aggregator.stop() == 0
    await _assert_exactly_once(store, producer.produced)


@contextlib.asynccontextmanager
async def _tcp_proxy(port: int, host: str, target_port: int) -> AsyncIterator[None]:
    """Forward 127.0.0.1:`port` to host:target_port while open (the database coming up)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(host, target_port)
        await asyncio.gather(
            pipe(client_r, upstream_w), pipe(upstream_r, client_w), return_exceptions=True
        )

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
