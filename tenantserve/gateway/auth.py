"""Authenticator: `Authorization: Bearer <api key | JWT>` -> `TenantContext`, with a short
TTL cache so the database stays off the hot path.

The cache is keyed by the sha256 of the credential (the plaintext is never kept) and
holds successes only, for `ttl_s` seconds. Admin changes made through this process
(`invalidate_tenant`, `invalidate_key`) take effect at once; changes made elsewhere (the
CLI on the database, another gateway) within `ttl_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, Protocol

from tenantserve.errors import AuthenticationError
from tenantserve.observability.context import bind_tenant
from tenantserve.tenancy.model import TenantContext

DEFAULT_TTL_S = 2.0
DEFAULT_MAX_ENTRIES = 10_000
BEARER = "bearer"


class CredentialVerifier(Protocol):
    """What authentication needs of the tenancy service."""

    async def authenticate(self, credential: str) -> TenantContext: ...


class _Entry(NamedTuple):
    ctx: TenantContext
    expires_at: float


class Authenticator:
    """Turns an Authorization header into a `TenantContext` or raises an AuthError subclass."""

    def __init__(
        self,
        verifier: CredentialVerifier,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verifier = verifier
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()

    async def authenticate(self, authorization: str | None) -> TenantContext:
        """The caller's context (also bound to the request's log / span context);
        AuthenticationError (401) when the header is missing or not `Bearer <credential>`,
        else whatever the tenancy service raises."""
        credential = bearer_credential(authorization)
        digest = hashlib.sha256(credential.encode()).digest()
        now = self._clock()
        entry = self._cache.get(digest)
        if entry is not None:
            if entry.expires_at > now:
                bind_tenant(entry.ctx.tenant_id)
                return entry.ctx
            del self._cache[digest]
        ctx = await self._verifier.authenticate(credential)
        if self._ttl_s > 0:
            self._cache[digest] = _Entry(ctx, now + self._ttl_s)
            if len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)  # the oldest entry
        bind_tenant(ctx.tenant_id)
        return ctx

    def invalidate_tenant(self, tenant_id: str) -> None:
        """Forget every cached credential of the tenant (suspended, tier or limits changed)."""
        self._drop(lambda ctx: ctx.tenant_id == tenant_id)

    def invalidate_key(self, key_id: str) -> None:
        """Forget the cached API key (revoked)."""
        self._drop(lambda ctx: ctx.key_id == key_id)

    def _drop(self, matches: Callable[[TenantContext], bool]) -> None:
        for digest in [d for d, e in self._cache.items() if matches(e.ctx)]:
            del self._cache[digest]


def bearer_credential(authorization: str | None) -> str:
    """The credential of an `Authorization: Bearer <credential>` header."""
    if not authorization:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>`."
        )
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != BEARER or not credential:
        raise AuthenticationError("The Authorization header must be `Bearer <key>`.")
    return credential


def check_admin(authorization: str | None, token: bytes) -> None:
    """AuthenticationError (401) unless `authorization` carries the admin token
    (compared in constant time)."""
    presented = bearer_credential(authorization).encode()
    if not hmac.compare_digest(presented, token):
        raise AuthenticationError("invalid admin token")
