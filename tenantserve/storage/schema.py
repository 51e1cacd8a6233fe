"""Every table the migrations build, as the code declares them (the schema tests compare
the migrated database with these)."""

from __future__ import annotations

from sqlalchemy import MetaData


def all_metadata() -> list[MetaData]:
    """The `MetaData` of each package that owns tables."""
    from tenantserve.audit.tables import metadata as audit
    from tenantserve.billing.tables import metadata as billing
    from tenantserve.metering.tables import metadata as metering
    from tenantserve.observability.record_tables import metadata as records
    from tenantserve.registry.eval_tables import metadata as evals
    from tenantserve.registry.tables import metadata as registry
    from tenantserve.tenancy.tables import metadata as tenancy

    return [tenancy, registry, metering, billing, records, audit, evals]
