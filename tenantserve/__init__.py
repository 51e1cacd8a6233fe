"""tenantserve: a multi-tenant model serving platform."""

__version__ = "0.1.0"
