"""`BillingUnitOfWork`: one transaction around billing (`storage/unit_of_work.py`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tenantserve.billing.invoice_repository import InvoiceRepository
from tenantserve.billing.repository import CreditRepository, PriceBookRepository, UsageReader
from tenantserve.storage.unit_of_work import SqlUnitOfWork


class BillingUnitOfWork(SqlUnitOfWork):
    """The price book, invoices, credits and the usage they are computed from, in one
    session."""

    prices: PriceBookRepository
    invoices: InvoiceRepository
    credits: CreditRepository
    usage: UsageReader

    def _open(self, session: AsyncSession) -> None:
        self.prices = PriceBookRepository(session)
        self.invoices = InvoiceRepository(session)
        self.credits = CreditRepository(session)
        self.usage = UsageReader(session)
