"""Alembic environment: runs on the caller's connection (`migrate()`), else its own
async engine (the alembic command line with `-x`-less config from `alembic_config`)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from tenantserve.registry.tables import metadata as registry_metadata
from tenantserve.storage.database import create_engine
from tenantserve.tenancy.tables import metadata as tenancy_metadata

config = context.config
target_metadata = [tenancy_metadata, registry_metadata]


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (shared := config.attributes.get("connection")) is not None:
    run_migrations(shared)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "sqlalchemy.url is not configured"
    asyncio.run(run_async_migrations(url))
