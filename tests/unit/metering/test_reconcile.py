"""Reconciliation of the request log with the ledger, and `tenantserve usage reconcile`:
"the pipeline lost 6 hours of events for 3 tenants" — found, re-emitted once, and a
second run finds nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio
from typer.testing import CliRunner

from tenantserve.cli.main import app
from tenantserve.gateway.request_log import RequestLog, RequestLogFiles, RequestRecord
from tenantserve.metering.events import UsageEvent
from tenantserve.metering.outbox import OUTBOX_FILE, Outbox
from tenantserve.metering.reconcile import reconcile
from tenantserve.metering.report import Granularity
from tenantserve.metering.store import UsageStore
from tenantserve.storage.database import DATABASE_FILE, create_engine
from tenantserve.storage.migrations import migrate
from tests.helpers.usage import usage_event

DAY = datetime(2026, 11, 20, tzinfo=UTC)
TENANTS = [f"ten_{i}" for i in range(5)]
LOST_TENANTS = {"ten_1", "ten_2", "ten_4"}
LOST = (DAY + timedelta(hours=6), DAY + timedelta(hours=12))  # six hours
CLEAN_ENV = {"TENANTSERVE_URL": None, "TENANTSERVE_DATABASE_URL": None}


def _traffic() -> list[UsageEvent]:
    """Four requests per tenant per hour over the day."""
    events = []
    for hour in range(24):
        for n, tenant in enumerate(TENANTS):
            for k in range(4):
                t = DAY + timedelta(hours=hour, minutes=n * 10 + k)
                rid = hour * 1000 + n * 10 + k
                events.append(usage_event(rid, t.timestamp(), tenant, output_tokens=1 + k))
    return events


def _lost(e: UsageEvent) -> bool:
    return e.tenant_id in LOST_TENANTS and LOST[0] <= e.ended < LOST[1]


def _log(directory: Path, events: list[UsageEvent]) -> None:
    log = RequestLog(RequestLogFiles(directory))
    assert log.files is not None
    for e in events:
        record = RequestRecord(
            e.request_id,
            e.tenant_id,
            e.tier,
            e.pool,
            e.model,
            e.status.value,
            e.input_tokens,
            e.output_tokens,
            e.cached_input_tokens,
            1.0,
            0.5,
            None,
            10.0,
            20.0,
            usage=e,
        )
        log.files.write(record.to_json(), now=e.ended + timedelta(seconds=1))
    log.close()


@pytest_asyncio.fixture
async def data_dir(tmp_path: Path) -> AsyncIterator[Path]:
    """A data dir whose request log holds a day of traffic and whose usage store lost
    three tenants' events for six hours of it."""
    url = f"sqlite+aiosqlite:///{tmp_path / DATABASE_FILE}"
    await migrate(url)
    engine = create_engine(url)
    events = _traffic()
    _log(tmp_path / "logs", events)
    await UsageStore(engine).apply([e for e in events if not _lost(e)])
    await engine.dispose()
    yield tmp_path


async def test_reconcile_finds_the_lost_events_re_emits_them_once_then_finds_nothing(
    data_dir: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{data_dir / DATABASE_FILE}")
    store = UsageStore(engine)
    start, end = DAY, DAY + timedelta(days=1)
    logged = list(RequestLogFiles(data_dir / "logs").usage_events(start, end))
    events = _traffic()
    assert len(logged) == len(events)
    try:
        dry = await reconcile(logged, store, start, end, dry_run=True)
        assert {e.event_id for e in dry.missing} == {e.event_id for e in events if _lost(e)}
        assert len(dry.missing) == 3 * 6 * 4 and dry.applied == 0
        assert set(dry.missing_by_tenant()) == LOST_TENANTS
        assert dry.mismatched == [] and dry.unlogged == 0

        outbox = Outbox(data_dir / OUTBOX_FILE)
        fixed = await reconcile(logged, store, start, end, outbox=outbox, apply=True)
        assert fixed.applied == fixed.reemitted == 72
        # The copies in the outbox count nothing again when the pipeline drains them.
        assert await store.apply([e.event() for e in outbox.read(1000)]) == 0
        outbox.close()

        again = await reconcile(logged, store, start, end, apply=True)
        assert again.clean and again.applied == 0 and again.counted == len(events)
        report = await store.usage(None, start, end, Granularity.DAY)
        assert report.total.requests == len(events)
        assert report.total.output_tokens == sum(e.output_tokens for e in events)

        # One tenant's window only.
        one = await reconcile(logged, store, start, end, tenant_id="ten_3", dry_run=True)
        assert one.logged == one.counted == 24 * 4
    finally:
        await engine.dispose()


async def test_a_counted_event_that_differs_from_the_log_is_reported(data_dir: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{data_dir / DATABASE_FILE}")
    try:
        store = UsageStore(engine)
        e = usage_event(99_999, (DAY + timedelta(hours=1)).timestamp(), "ten_0")
        await store.apply([e])
        changed = usage_event(99_999, e.ended_at, "ten_0", output_tokens=50)
        report = await reconcile([changed], store, DAY, DAY + timedelta(hours=2), "ten_0")
        assert [m[0].event_id for m in report.mismatched] == [e.event_id]
        assert report.unlogged == 4 * 2  # the day's other events of ten_0 in the window
    finally:
        await engine.dispose()


def test_the_reconcile_command_reports_and_repairs(data_dir: Path) -> None:
    args = ["usage", "reconcile", "--start", "2026-11-20", "--end", "2026-11-21"]
    args += ["--data-dir", str(data_dir)]
    runner = CliRunner()
    dry = runner.invoke(app, [*args, "--dry-run"], env=CLEAN_ENV)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["missing"] == 72
    fixed = runner.invoke(app, args, env=CLEAN_ENV)
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["applied"] == 72
    assert "re-emitted 72 events" in fixed.stderr
    again = json.loads(runner.invoke(app, args, env=CLEAN_ENV).stdout)
    assert again["missing"] == 0 and again["applied"] == 0

    show = runner.invoke(
        app,
        [
            "usage",
            "show",
            "--tenant",
            "ten_1",
            "--start",
            "2026-11-20",
            "--end",
            "2026-11-21",
            "--data-dir",
            str(data_dir),
        ],
        env=CLEAN_ENV,
    )
    assert show.exit_code == 0, show.output
    assert json.loads(show.stdout)["total"]["requests"] == 96


def test_reconcile_without_a_log_directory_says_what_to_pass(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "usage",
            "reconcile",
            "--start",
            "2026-11-20",
            "--end",
            "2026-11-21",
            "--data-dir",
            str(tmp_path / "empty"),
        ],
        env=CLEAN_ENV,
    )
    assert result.exit_code == 2 and "--log-dir" in result.stderr


def test_request_log_files_are_hourly_and_skip_torn_lines(tmp_path: Path) -> None:
    files = RequestLogFiles(tmp_path)
    e = usage_event(1, (DAY + timedelta(minutes=59, seconds=59)).timestamp(), "ten_0")
    files.write(
        RequestRecord(
            "req_1",
            "ten_0",
            "standard",
            "p",
            "m",
            "completed",
            10,
            5,
            2,
            1.0,
            0.5,
            None,
            1.0,
            2.0,
            usage=e,
        ).to_json(),
        now=DAY + timedelta(hours=1, seconds=1),
    )
    files.close()
    path = tmp_path / "requests-2026112001.jsonl"
    assert path.exists()
    with path.open("a") as f:
        f.write('{"request_id": "req_2", "usa')  # a crash mid-line
    assert list(files.usage_events(DAY, DAY + timedelta(hours=1))) == [e]
