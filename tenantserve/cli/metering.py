"""`tenantserve metering ship|aggregate`: the metering pipeline's two stages as their own
processes (`TENANTSERVE_METERING_IN_PROCESS=false` keeps them out of `tenantserve up`).

    ship        the data dir's outbox (`usage-outbox.db`) → the JetStream usage stream
    aggregate   the usage stream → the database's usage ledger and buckets

Both read the settings from the environment (`TENANTSERVE_NATS_URL` is required; the
aggregator migrates `TENANTSERVE_DATABASE_URL`, else the data dir's SQLite file, first;
the shipper touches no database), log their progress every few seconds on stderr, and
stop cleanly on SIGTERM or SIGINT. While NATS or the database is not ready at start-up
(restarting, a dropped connection) they retry with a back-off for `--start-timeout-s`,
logging why, and then exit 1 naming the last error. Killed instead (SIGKILL), they lose
nothing: unshipped rows stay in the outbox and unacked messages are redelivered (see
`tenantserve/metering/`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from tenantserve.cli.runner import log_to_stderr
from tenantserve.config import Settings
from tenantserve.errors import TenantServeError
from tenantserve.metering.aggregator import DURABLE, Aggregator
from tenantserve.metering.outbox import OUTBOX_FILE, Outbox
from tenantserve.metering.shipper import Shipper
from tenantserve.metering.store import UsageStore
from tenantserve.metering.stream import STREAM_NAME, SUBJECT_PREFIX, UsageStream

logger = logging.getLogger("tenantserve.metering")

metering_app = typer.Typer(
    name="metering",
    help="Run the metering pipeline's shipper or aggregator as its own process.",
    no_args_is_help=True,
)

_PROGRESS_EVERY_S = 5.0
_MAX_START_DELAY_S = 5.0

DataDirOption = Annotated[
    Path | None,
    typer.Option(help="Data dir (default .tenantserve).", show_default=False),
]
NatsUrlOption = Annotated[
    str | None,
    typer.Option(
        "--nats-url", help="NATS server (default: TENANTSERVE_NATS_URL).", show_default=False
    ),
]
StreamOption = Annotated[str, typer.Option("--stream", help="JetStream stream name.")]
SubjectPrefixOption = Annotated[
    str, typer.Option("--subject-prefix", help="Subjects are <prefix>.<tenant id>.")
]
StartTimeoutOption = Annotated[
    float,
    typer.Option(
        "--start-timeout-s", help="How long to retry while NATS or the database is not ready."
    ),
]


@metering_app.command()
def ship(
    data_dir: DataDirOption = None,
    nats_url: NatsUrlOption = None,
    stream: StreamOption = STREAM_NAME,
    subject_prefix: SubjectPrefixOption = SUBJECT_PREFIX,
    start_timeout_s: StartTimeoutOption = 60.0,
) -> None:
    """Ship the data dir's usage outbox to the JetStream usage stream until stopped."""
    settings, url = _settings(data_dir, nats_url)
    usage_stream = UsageStream(name=stream, subject_prefix=subject_prefix)
    _run(_ship(settings, url, usage_stream, start_timeout_s))


@metering_app.command()
def aggregate(
    data_dir: DataDirOption = None,
    nats_url: NatsUrlOption = None,
    stream: StreamOption = STREAM_NAME,
    subject_prefix: SubjectPrefixOption = SUBJECT_PREFIX,
    durable: Annotated[
        str, typer.Option(help="Durable consumer name (shared by every aggregator).")
    ] = DURABLE,
    ack_wait_s: Annotated[
        float, typer.Option("--ack-wait-s", help="Seconds before an unacked batch is resent.")
    ] = 30.0,
    start_timeout_s: StartTimeoutOption = 60.0,
) -> None:
    """Count the usage stream into the database until stopped."""
    settings, url = _settings(data_dir, nats_url)
    usage_stream = UsageStream(name=stream, subject_prefix=subject_prefix)
    _run(_aggregate(settings, url, usage_stream, durable, ack_wait_s, start_timeout_s))


async def _ship(
    settings: Settings, nats_url: str, stream: UsageStream, start_timeout_s: float
) -> None:
    outbox = Outbox(settings.data_dir / OUTBOX_FILE, settings.metering.outbox_synchronous)
    shipper = Shipper(outbox, nats_url, stream=stream)
    try:
        await start_with_retries("the shipper", shipper.start, start_timeout_s)
        logger.info(
            "shipping %s (%d pending) to %s on %s",
            outbox.path,
            outbox.pending(),
            stream.name,
            nats_url,
        )
        await _until_signal(shipper.run_forever(), shipper.close, lambda: shipper.shipped)
    finally:
        await shipper.close()
        outbox.close()
    logger.info("shipper stopped after %d events", shipper.shipped)


async def _aggregate(
    settings: Settings,
    nats_url: str,
    stream: UsageStream,
    durable: str,
    ack_wait_s: float,
    start_timeout_s: float,
) -> None:
    from tenantserve.storage.database import create_engine, database_url
    from tenantserve.storage.migrations import migrate

    url = database_url(settings)
    engine = create_engine(url)
    aggregator = Aggregator(
        nats_url, UsageStore(engine), stream=stream, durable=durable, ack_wait_s=ack_wait_s
    )

    async def start() -> None:
        await migrate(url)
        await aggregator.start()

    try:
        await start_with_retries("the aggregator", start, start_timeout_s)
        logger.info("aggregating %s (consumer %s) on %s", stream.name, durable, nats_url)
        await _until_signal(aggregator.run_forever(), aggregator.close, lambda: aggregator.counted)
    finally:
        await aggregator.close()
        await engine.dispose()
    logger.info("aggregator stopped after %d new events", aggregator.counted)


async def start_with_retries(
    what: str, start: Callable[[], Awaitable[None]], timeout_s: float
) -> None:
    """Run `start`, again after a growing delay (up to 5 s) while it fails with anything
    but a configuration error, for at most `timeout_s` in all (an attempt still running
    then is cancelled); then fail naming the last error."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.25
    while True:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await start()
            return
        except TenantServeError:
            raise
        except Exception as e:
            first_line = str(e).strip().split("\n", 1)[0][:300]  # not the SQL of a DBAPIError
            problem = f"{type(e).__name__}: {first_line}" if first_line else type(e).__name__
            if time.monotonic() + delay_s > deadline:
                _fail(
                    f"{what} could not start in {timeout_s:g} s ({problem}); check that NATS "
                    "and the database are up and reachable (TENANTSERVE_NATS_URL, "
                    "TENANTSERVE_DATABASE_URL)"
                )
            logger.warning("%s is not ready (%s); retrying in %.2f s", what, problem, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(_MAX_START_DELAY_S, delay_s * 2)


async def _until_signal(
    work: Coroutine[Any, Any, None],
    stop: Callable[[], Awaitable[None]],
    progress: Callable[[], int],
) -> None:
    """Run `work` until it ends, or until SIGTERM/SIGINT, when `stop()` ends it; logs
    `progress()` (a running count of events) every few seconds."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    stop_requested = asyncio.Event()

    def on_signal(signum: int) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        stop_requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    stop_wait = asyncio.ensure_future(stop_requested.wait())
    last_count, last_s = progress(), time.monotonic()
    while not task.done():
        await asyncio.wait([task, stop_wait], timeout=_PROGRESS_EVERY_S)
        if stop_requested.is_set():
            await stop()
            await task
            break
        count, now_s = progress(), time.monotonic()
        if count != last_count:
            logger.info("%d events so far (%.0f/s)", count, (count - last_count) / (now_s - last_s))
        last_count, last_s = count, now_s
    stop_wait.cancel()
    task.result()


def _settings(data_dir: Path | None, nats_url: str | None) -> tuple[Settings, str]:
    try:
        settings = Settings.from_env(data_dir=data_dir)
    except TenantServeError as e:
        _fail(str(e))
    url = nats_url or settings.metering.nats_url
    if not url:
        _fail("no NATS server: set TENANTSERVE_NATS_URL (or pass --nats-url)")
    return replace(settings, metering=replace(settings.metering, nats_url=url)), url


def _run(main: Coroutine[Any, Any, None]) -> None:
    log_to_stderr()
    try:
        asyncio.run(main)
    except TenantServeError as e:
        _fail(str(e))
    except (OSError, TimeoutError) as e:  # e.g. NATS or the database unreachable
        _fail(f"{type(e).__name__}: {e}")


def _fail(message: str) -> NoReturn:
    print(f"[tenantserve] error: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(code=1)
