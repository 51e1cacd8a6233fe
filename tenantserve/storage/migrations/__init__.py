"""Alembic migrations of the metadata database, configured in code (no alembic.ini).

`await migrate(url)` upgrades a database to head; `tenantserve up` calls it at
start-up and tests call it on an empty database. One history for every table
the platform owns; new tables add a revision under `versions/`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from tenantserve.storage.database import async_url, create_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent
# pg_advisory_xact_lock key: several gateways starting at once migrate one at a time.
_PG_MIGRATION_LOCK = 0x7465_6E61_6E74


def alembic_config(url: str | URL) -> Config:
    """An Alembic config pointing at this directory and `url` (for the alembic CLI API)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    rendered = async_url(url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest revision in `versions/`."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def migrate(url: str | URL, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision`, in one transaction where the backend can."""
    cfg = alembic_config(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, cfg, revision)
    finally:
        await engine.dispose()


async def current_revision(url: str | URL) -> str | None:
    """The revision the database at `url` is at (None: never migrated)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
            )
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, cfg: Config, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)
