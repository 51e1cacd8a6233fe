"""Billing: the price book, monthly invoices per tenant (idempotent, reproducible from
usage events), credits, credit notes, exports, and cost allocation."""
