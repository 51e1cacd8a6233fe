from __future__ import annotations

from dataclasses import replace

from tenantserve.gateway.catalog import CatalogEntry, ModelCatalog
from tenantserve.tenancy.model import Region, TenantContext
from tenantserve.tiers import Tier


def ctx(tenant: str = "ten_a", region: Region = Region.US) -> TenantContext:
    return TenantContext(tenant_id=tenant, tier=Tier.PREMIUM, region=region)


CATALOG = ModelCatalog(
    [
        CatalogEntry("Llama-8B", "shared-us", Region.US, 8192),
        CatalogEntry("Llama-8B", "shared-eu", Region.EU, 8192),
        CatalogEntry("Llama-8B", "vip", Region.US, 8192, reserved_for=frozenset({"ten_vip"})),
        CatalogEntry("secret", "vip", Region.US, 4096, reserved_for=frozenset({"ten_vip"})),
        CatalogEntry("eu-only", "shared-eu", Region.EU, 2048),
    ]
)


def test_a_caller_is_routed_to_the_shared_pool_of_its_region() -> None:
    assert CATALOG.routes(ctx())["Llama-8B"].pool == "shared-us"
    assert CATALOG.routes(ctx(region=Region.EU))["Llama-8B"].pool == "shared-eu"
    assert CATALOG.routes(ctx())["Llama-8B"].reserved_pool is None


def test_the_lower_case_alias_routes_like_the_name() -> None:
    alias = CATALOG.routes(ctx())["llama-8b"]
    assert (alias.model_id, alias.target, alias.pool) == ("llama-8b", "Llama-8B", "shared-us")


def test_a_reservation_is_in_its_tenants_view_only() -> None:
    vip = CATALOG.routes(ctx("ten_vip"))
    assert vip["Llama-8B"].reserved_pool == "vip"
    assert vip["secret"].pool == "vip"
    assert "secret" not in CATALOG.routes(ctx())
    assert CATALOG.routes(ctx("ten_vip", Region.EU))["Llama-8B"].reserved_pool is None


def test_a_model_of_another_region_stays_in_the_view_so_admission_can_refuse_it() -> None:
    route = CATALOG.routes(ctx())["eu-only"]
    assert route.region is Region.EU
    assert [r.model_id for r in CATALOG.visible(ctx())] == ["Llama-8B"]
    assert {r.model_id for r in CATALOG.visible(ctx(region=Region.EU))} == {"Llama-8B", "eu-only"}


def test_the_key_scope_limits_what_is_listed() -> None:
    scoped = TenantContext("ten_vip", Tier.PREMIUM, Region.US, allowed_models=frozenset({"secret"}))
    assert [r.model_id for r in CATALOG.visible(scoped)] == ["secret"]


def test_a_dedicated_pool_serves_only_the_tenant_moved_onto_it() -> None:
    catalog = ModelCatalog(
        [
            CatalogEntry("Llama-8B", "shared-us", Region.US, 8192),
            CatalogEntry("Llama-8B", "dedicated-1", Region.US, 8192, dedicated=True),
            CatalogEntry("only-there", "dedicated-1", Region.US, 8192, dedicated=True),
        ]
    )
    nobody = catalog.routes(ctx("ten_a"))
    assert nobody["Llama-8B"].pool == "shared-us"
    assert nobody["Llama-8B"].reserved_pool is None
    assert "only-there" not in nobody  # dedicated, nobody moved there: not visible
    moved = catalog.routes(replace(ctx("ten_a"), pool="dedicated-1"))
    assert moved["Llama-8B"].reserved_pool == "dedicated-1"
    assert moved["only-there"].reserved_pool == "dedicated-1"
    # Another tenant's view is untouched by the first one's move (views are cached).
    assert catalog.routes(ctx("ten_b"))["Llama-8B"].reserved_pool is None
    assert "only-there" not in catalog.routes(ctx("ten_b"))
