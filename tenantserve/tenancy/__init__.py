"""Tenants, API keys, JWT auth and the TenantContext every request carries."""
