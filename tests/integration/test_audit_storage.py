"""The audit log persisted for real, on SQLite and on PostgreSQL (a fresh database per
session; with CI=true an unreachable PostgreSQL fails): concurrent appends from two
processes' worth of engines never fork the chain, the database itself refuses UPDATE and
DELETE, and tampering done with the triggers off is named by verify."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from tenantserve.audit.chain import ProblemKind
from tenantserve.audit.log import AuditLog
from tenantserve.audit.repository import AuditQuery
from tenantserve.errors import InvalidRequestError
from tenantserve.storage.database import Database
from tenantserve.storage.migrations import migrate
from tests.helpers.databases import BACKENDS, drop_postgres_database, fresh_postgres_database


@pytest.fixture(scope="session")
def audit_postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database with an empty audit log."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tenantserve.db'}"
    else:
        url = request.getfixturevalue("audit_postgres_url")
    await migrate(url)
    db = Database(url)
    if db.dialect == "postgresql":  # empty it as the table's owner, triggers off
        await _with_triggers_off(db, "DELETE FROM audit_log")
    yield db
    await db.dispose()


async def _with_triggers_off(db: Database, *statements: str) -> None:
    """Run `statements` as someone able to switch the append-only triggers off."""
    async with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            await conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
        else:
            await conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            await conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
        for statement in statements:
            await conn.exec_driver_sql(statement)
        if db.dialect == "postgresql":
            await conn.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER USER")


async def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        await log.record(
            "admin", "tenant.update", f"ten_{i}", {"tier": {"from": "free", "to": "standard"}}
        )


async def test_concurrent_appends_from_two_engines_make_one_valid_chain(
    database: Database,
) -> None:
    other = Database(database.url)
    try:
        logs = [AuditLog(database.engine), AuditLog(other.engine)]
        await asyncio.gather(
            *(logs[i % 2].record("admin", "key.create", f"key_{i}", {"i": i}) for i in range(50))
        )
        report = await logs[1].verify()
        assert report.ok, report.problem
        assert report.checked == 50 and report.head is not None and report.head.seq == 50
        page = await logs[0].page(limit=1000)
        assert [e.seq for e in page.entries] == list(range(1, 51))
        assert sorted(e.details["i"] for e in page.entries) == list(range(50))
        assert page.next_cursor is None
    finally:
        await other.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'someone' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "DELETE FROM audit_log",
    ],
)
async def test_the_database_refuses_to_change_or_remove_entries(
    database: Database, statement: str
) -> None:
    log = AuditLog(database.engine)
    await _fill(log, 2)
    with pytest.raises(DBAPIError, match="append-only"):
        async with database.engine.begin() as conn:
            await conn.exec_driver_sql(statement)
    report = await log.verify()
    assert report.ok and report.checked == 2


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # TRUNCATE is PostgreSQL's
async def test_postgresql_refuses_truncate(database: Database) -> None:
    await _fill(AuditLog(database.engine), 1)
    with pytest.raises(DBAPIError, match="append-only"):
        async with database.engine.begin() as conn:
            await conn.exec_driver_sql("TRUNCATE audit_log")


@pytest.mark.parametrize(
    ("statements", "kind", "seq"),
    [
        (['UPDATE audit_log SET details = \'{"tier": "premium"}\' WHERE seq = 3'], "edited", 3),
        (["UPDATE audit_log SET actor = 'cli:mallory' WHERE seq = 4"], "edited", 4),
        (["DELETE FROM audit_log WHERE seq = 3"], "removed", 3),
        (["DELETE FROM audit_log WHERE seq = 1"], "removed", 1),
        (
            [
                "UPDATE audit_log SET seq = -2 WHERE seq = 2",
                "UPDATE audit_log SET seq = 2 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = -2",
            ],
            "reordered",
            2,
        ),
    ],
)
async def test_tampering_with_the_triggers_off_is_named_by_verify(
    database: Database, statements: list[str], kind: str, seq: int
) -> None:
    log = AuditLog(database.engine)
    await _fill(log, 5)
    assert (await log.verify()).ok
    await _with_triggers_off(database, *statements)
    report = await log.verify()
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind(kind), seq)


async def test_a_cut_tail_is_found_against_the_kept_head(database: Database) -> None:
    log = AuditLog(database.engine)
    await _fill(log, 4)
    kept = await log.head()
    await _with_triggers_off(database, "DELETE FROM audit_log WHERE seq >= 3")
    assert (await log.verify()).ok
    report = await log.verify(anchor=kept)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind.TRUNCATED, 3)


async def test_pages_are_oldest_first_filtered_with_a_next_cursor(database: Database) -> None:
    log = AuditLog(database.engine)
    for i in range(5):
        await log.record("admin", "tenant.update", "ten_a" if i % 2 else "ten_b", {"i": i})
        await log.record(f"tenant:ten_{i}", "adapter.upload", f"ad_{i}", {"key": "ts-x-secret"})
    first = await log.page(AuditQuery(action="tenant.update"), limit=3)
    assert [e.details["i"] for e in first.entries] == [0, 1, 2]
    assert first.next_cursor == first.entries[-1].seq
    rest = await log.page(
        AuditQuery(after_seq=first.next_cursor or 0, action="tenant.update"), limit=3
    )
    assert [e.details["i"] for e in rest.entries] == [3, 4] and rest.next_cursor is None
    only_a = await log.page(AuditQuery(target="ten_a"))
    assert [e.details["i"] for e in only_a.entries] == [1, 3]
    uploads = await log.page(AuditQuery(actor="tenant:ten_2"))
    assert [e.details for e in uploads.entries] == [{"key": "[redacted]"}]


async def test_newest_first_pages_walk_back_in_a_time_window(database: Database) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    minutes = iter(range(100))
    log = AuditLog(database.engine, clock=lambda: start + timedelta(minutes=next(minutes)))
    for i in range(6):
        await log.record("admin", "tenant.update", "ten_a", {"i": i})  # at minute i
    window = AuditQuery(
        since=start + timedelta(minutes=1), until=start + timedelta(minutes=5), newest_first=True
    )
    first = await log.page(window, limit=3)
    assert [e.details["i"] for e in first.entries] == [4, 3, 2]
    rest = await log.page(replace(window, before_seq=first.next_cursor), limit=3)
    assert [e.details["i"] for e in rest.entries] == [1] and rest.next_cursor is None
    newest = await log.page(AuditQuery(newest_first=True), limit=1)
    assert [e.seq for e in newest.entries] == [6]
    with pytest.raises(InvalidRequestError):
        await log.page(AuditQuery(since=start, until=start))
