"""`RegistryUnitOfWork`: one transaction around model-registry changes (model versions,
tenant adapters and rollouts).

    async with uow:
        await uow.models.add(version)
        await uow.commit()

Leaving the block without `commit()` (or by an exception) rolls everything back.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenantserve.registry.repository import (
    AdapterRepository,
    ModelRepository,
    RolloutRepository,
)


class RegistryUnitOfWork:
    """A session and its repositories for one `async with` block; not reentrant."""

    models: ModelRepository
    adapters: AdapterRepository
    rollouts: RolloutRepository

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> RegistryUnitOfWork:
        if self._session is not None:
            raise RuntimeError("RegistryUnitOfWork is already in use")
        self._session = self._sessionmaker()
        self.models = ModelRepository(self._session)
        self.adapters = AdapterRepository(self._session)
        self.rollouts = RolloutRepository(self._session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            await session.rollback()
        finally:
            await session.close()

    async def commit(self) -> None:
        """Make this block's changes durable."""
        await self._require_session().commit()

    async def rollback(self) -> None:
        """Discard this block's changes so far."""
        await self._require_session().rollback()

    def _require_session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("RegistryUnitOfWork used outside `async with`")
        return self._session
