from __future__ import annotations

from dataclasses import replace

import pytest

from tenantserve.admission.policy import (
    AdmissionRequest,
    Admitted,
    Denied,
    ModelRoute,
    PolicyConfig,
    decide,
)
from tenantserve.tenancy.model import Region, TenantContext, TenantLimits
from tenantserve.tiers import Tier

ROUTE = ModelRoute("smollm2", "smollm2-135m-instruct@2024-11-01", "shared-us", Region.US, 8192)
CATALOG = {"smollm2": ROUTE}
CFG = PolicyConfig()


def ctx(tier: Tier = Tier.STANDARD, **kw: object) -> TenantContext:
    return replace(TenantContext(tenant_id="ten_a", tier=tier, region=Region.US), **kw)  # type: ignore[arg-type]


def ask(model: str = "smollm2", prompt: int = 100, max_tokens: int | None = 50) -> AdmissionRequest:
    return AdmissionRequest(model, prompt, max_tokens)


def test_known_model_is_admitted_with_the_tier_priority() -> None:
    out = decide(ctx(Tier.PREMIUM), ask(), CATALOG, CFG)
    assert isinstance(out, Admitted)
    assert (out.pool, out.max_tokens, out.priority) == ("shared-us", 50, Tier.PREMIUM.priority)


def test_unknown_model_and_another_tenants_adapter_are_both_plain_404() -> None:
    a = decide(ctx(), ask("nope"), CATALOG, CFG)
    # Another tenant's adapter is simply absent from this caller's catalog view.
    b = decide(ctx(), ask("their-adapter"), CATALOG, CFG)
    assert isinstance(a, Denied) and isinstance(b, Denied)
    assert (a.status, a.code) == (b.status, b.code) == (404, "model_not_found")
    assert "their-adapter" in b.message and "exist" in b.message


def test_region_mismatch_is_refused_never_served_elsewhere() -> None:
    out = decide(ctx(region=Region.EU), ask(), CATALOG, CFG)
    assert isinstance(out, Denied) and (out.status, out.code) == (403, "region_mismatch")


def test_key_scope_excludes_other_models() -> None:
    out = decide(ctx(allowed_models=frozenset({"other"})), ask(), CATALOG, CFG)
    assert isinstance(out, Denied) and (out.status, out.code) == (403, "model_not_allowed")
    ok = decide(ctx(allowed_models=frozenset({"smollm2"})), ask(), CATALOG, CFG)
    assert isinstance(ok, Admitted)


@pytest.mark.parametrize(
    ("tier", "prompt", "max_tokens", "code"),
    [
        (Tier.FREE, 5000, 10, "prompt_too_long"),
        (Tier.FREE, 10, 1000, "max_tokens_too_large"),
        (Tier.PREMIUM, 8000, 500, "context_length_exceeded"),
        (Tier.PREMIUM, 9000, None, "context_length_exceeded"),
    ],
)
def test_oversized_requests_are_400_naming_the_limit(
    tier: Tier, prompt: int, max_tokens: int | None, code: str
) -> None:
    out = decide(ctx(tier), ask(prompt=prompt, max_tokens=max_tokens), CATALOG, CFG)
    assert isinstance(out, Denied) and (out.status, out.code) == (400, code)


def test_missing_max_tokens_gets_what_caps_and_context_allow() -> None:
    free = decide(ctx(Tier.FREE), ask(max_tokens=None), CATALOG, CFG)
    premium = decide(ctx(Tier.PREMIUM), ask(prompt=8000, max_tokens=None), CATALOG, CFG)
    assert isinstance(free, Admitted) and free.max_tokens == 512
    assert isinstance(premium, Admitted) and premium.max_tokens == 192


def test_tenant_override_beats_the_tier_cap() -> None:
    limits = TenantLimits(max_output_tokens=2000)
    out = decide(ctx(Tier.FREE, limits=limits), ask(max_tokens=1500), CATALOG, CFG)
    assert isinstance(out, Admitted) and out.max_tokens == 1500


def test_premium_tenant_with_a_reservation_goes_to_its_reserved_pool() -> None:
    route = replace(CATALOG["smollm2"], reserved_pool="reserved-ten_a")
    catalog = {**CATALOG, "smollm2": route}
    premium = decide(ctx(Tier.PREMIUM), ask(), catalog, CFG)
    standard = decide(ctx(Tier.STANDARD), ask(), catalog, CFG)
    assert isinstance(premium, Admitted) and premium.pool == "reserved-ten_a"
    assert isinstance(standard, Admitted) and standard.pool == "shared-us"
