"""Throwaway PostgreSQL databases for the storage tests (each test session gets its own,
created and dropped here), and the backends every storage test runs on."""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers.services import POSTGRES_URL, require_service

BACKENDS = ["sqlite", "postgresql"]


def fresh_postgres_database() -> str:
    """The URL of a new, empty PostgreSQL database (fails under CI=true, else skips, when
    PostgreSQL is unreachable)."""
    url = make_url(POSTGRES_URL)
    require_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    name = f"tenantserve_test_{secrets.token_hex(6)}"
    _postgres_admin(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_admin(statement: str) -> None:
    """Run one statement outside any transaction, on a thread of its own (fixtures that
    call this may be set up while the test's event loop is running)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _postgres_admin_async(statement)).result()


async def _postgres_admin_async(statement: str) -> None:
    engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()
