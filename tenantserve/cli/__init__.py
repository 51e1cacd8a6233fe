"""The `tenantserve` command line."""
