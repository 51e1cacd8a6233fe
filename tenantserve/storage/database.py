"""The metadata database: one async engine and its session factory, from a URL.

SQLite (`sqlite+aiosqlite:///<data_dir>/tenantserve.db`) by default, PostgreSQL
(asyncpg) when the settings name a URL. SQLite connections get WAL mode, foreign
keys and a busy timeout. Built in the composition root; nothing opens a
connection at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tenantserve.config import Settings
from tenantserve.errors import ConfigError

DATABASE_FILE = "tenantserve.db"
SQLITE_BUSY_TIMEOUT_MS = 5_000


def sqlite_url(data_dir: Path) -> str:
    """The default database: a SQLite file in the data dir."""
    return f"sqlite+aiosqlite:///{data_dir / DATABASE_FILE}"


def database_url(settings: Settings) -> str:
    """The configured database URL, else the SQLite file in the data dir."""
    return settings.database_url or sqlite_url(settings.data_dir)


def async_url(url: str | URL) -> URL:
    """`url` with an async driver: sqlite → aiosqlite, postgresql → asyncpg."""
    try:
        parsed = make_url(url)
    except Exception as e:
        raise ConfigError(f"invalid database URL {str(url)!r}: {e}") from e
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ConfigError(f"unsupported database {backend!r}: use sqlite or postgresql")


def create_engine(url: str | URL) -> AsyncEngine:
    """An async engine for `url`; for SQLite the file's directory is created."""
    parsed = async_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    """An async engine and its session factory; `dispose()` closes the pool."""

    def __init__(self, url: str | URL) -> None:
        self.url = async_url(url)
        self.engine = create_engine(self.url)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        """The backend name: sqlite or postgresql."""
        return self.url.get_backend_name()

    async def dispose(self) -> None:
        await self.engine.dispose()
