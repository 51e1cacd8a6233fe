"""`SqlUnitOfWork`: one session, one transaction, for one `async with` block.

    async with uow:
        await uow.tenants.add(tenant)
        await uow.commit()

Leaving the block without `commit()` (or by an exception) rolls everything back.
Subclasses attach their repositories to the session in `_open`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class SqlUnitOfWork:
    """A session and its repositories for one `async with` block; not reentrant."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None

    def _open(self, session: AsyncSession) -> None:
        """Build the repositories over `session`."""

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError(f"{type(self).__name__} is already in use")
        self._session = self._sessionmaker()
        self._open(self._session)
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
            raise RuntimeError(f"{type(self).__name__} used outside `async with`")
        return self._session
