"""Authenticator: Bearer parsing, the TTL cache, and invalidation by tenant and key."""

from __future__ import annotations

import pytest

from tenantserve.errors import AuthenticationError
from tenantserve.gateway.auth import Authenticator
from tenantserve.tenancy.model import Region, TenantContext
from tenantserve.tiers import Tier


class _CountingVerifier:
    def __init__(self) -> None:
        self.calls = 0

    async def authenticate(self, credential: str) -> TenantContext:
        self.calls += 1
        tenant_id, key_id = credential.split(":")
        return TenantContext(tenant_id, Tier.STANDARD, Region.US, key_id=key_id)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "abc"])
async def test_a_missing_or_non_bearer_header_is_refused(header: str | None) -> None:
    auth = Authenticator(_CountingVerifier())
    with pytest.raises(AuthenticationError):
        await auth.authenticate(header)


async def test_a_credential_is_asked_once_per_ttl() -> None:
    verifier, clock = _CountingVerifier(), _Clock()
    auth = Authenticator(verifier, ttl_s=2.0, clock=clock)
    for _ in range(3):
        assert (await auth.authenticate("Bearer t1:k1")).tenant_id == "t1"
    assert verifier.calls == 1
    clock.now = 2.5
    await auth.authenticate("bearer t1:k1")
    assert verifier.calls == 2


async def test_invalidation_by_tenant_or_key_forgets_only_those_credentials() -> None:
    verifier = _CountingVerifier()
    auth = Authenticator(verifier, ttl_s=60.0)
    for credential in ("t1:k1", "t1:k2", "t2:k3"):
        await auth.authenticate(f"Bearer {credential}")
    auth.invalidate_key("k2")
    auth.invalidate_tenant("t2")
    for credential in ("t1:k1", "t1:k2", "t2:k3"):
        await auth.authenticate(f"Bearer {credential}")
    assert verifier.calls == 3 + 2


async def test_failures_are_not_cached() -> None:
    class Refusing:
        calls = 0

        async def authenticate(self, credential: str) -> TenantContext:
            self.calls += 1
            raise AuthenticationError("invalid API key")

    verifier = Refusing()
    auth = Authenticator(verifier)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            await auth.authenticate("Bearer nope")
    assert verifier.calls == 2
