"""API keys: `ts-<key id part>-<secret>`, shown once, stored only as a hash.

The key id is parsed from the presented key and used for lookup; the secret is
compared in constant time against its stored hash (HMAC-SHA256 with the server
pepper when one is configured, plain SHA-256 otherwise). Each stored hash names
its scheme (`sha256:` / `hmac-sha256:`), so a changed pepper refuses old keys
instead of silently mismatching.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import NamedTuple

from tenantserve.errors import (
    AuthenticationError,
    CredentialsExpiredError,
    CredentialsRevokedError,
)
from tenantserve.tenancy.model import KEY_ID_PREFIX, ApiKey, random_id_part

KEY_PREFIX = "ts"
SECRET_BYTES = 32
_SHA256 = "sha256"
_HMAC_SHA256 = "hmac-sha256"
# Compared against when the key id is unknown, so both paths cost one digest compare.
_DUMMY_HASH = _SHA256 + ":" + "0" * 64


class GeneratedKey(NamedTuple):
    """A fresh key: what to store (id, prefix, hash) and the plaintext to show once."""

    key_id: str
    prefix: str
    secret_hash: str
    plaintext: str


class PresentedKey(NamedTuple):
    """A key as a client sent it, split into its lookup id and its secret."""

    key_id: str
    secret: str


class ApiKeyHasher:
    """Makes and checks API keys with one server pepper (None: plain SHA-256)."""

    def __init__(self, pepper: str | None = None) -> None:
        self._pepper = pepper.encode() if pepper else None

    def generate(self) -> GeneratedKey:
        """A new random key; the plaintext is not kept anywhere."""
        id_part = random_id_part()
        secret = secrets.token_urlsafe(SECRET_BYTES)
        prefix = f"{KEY_PREFIX}-{id_part}"
        return GeneratedKey(
            key_id=KEY_ID_PREFIX + id_part,
            prefix=prefix,
            secret_hash=self.hash_secret(secret),
            plaintext=f"{prefix}-{secret}",
        )

    def hash_secret(self, secret: str) -> str:
        """The stored form of a secret: `<scheme>:<hex digest>`."""
        if self._pepper is None:
            return _SHA256 + ":" + hashlib.sha256(secret.encode()).hexdigest()
        digest = hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()
        return _HMAC_SHA256 + ":" + digest

    def verify(self, stored: ApiKey | None, presented: PresentedKey, now: datetime) -> ApiKey:
        """The stored key if the secret matches and it is live; else an AuthError subclass."""
        expected = stored.secret_hash if stored is not None else _DUMMY_HASH
        matches = hmac.compare_digest(self.hash_secret(presented.secret), expected)
        if stored is None or stored.id != presented.key_id or not matches:
            raise AuthenticationError("invalid API key")
        if stored.is_revoked:
            raise CredentialsRevokedError("API key has been revoked")
        if stored.is_expired(now):
            raise CredentialsExpiredError("API key has expired")
        return stored


def looks_like_api_key(credential: str) -> bool:
    """Whether the credential has the API-key shape (as opposed to a JWT)."""
    return credential.startswith(KEY_PREFIX + "-")


def parse_key(credential: str) -> PresentedKey:
    """Split `ts-<id part>-<secret>`; AuthenticationError when it is not that shape."""
    parts = credential.strip().split("-", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        raise AuthenticationError("malformed API key")
    id_part, secret = parts[1], parts[2]
    if not id_part.isascii() or not id_part.isalnum() or len(id_part) > 64:
        raise AuthenticationError("malformed API key")
    if len(secret) > 256:
        raise AuthenticationError("malformed API key")
    return PresentedKey(key_id=KEY_ID_PREFIX + id_part, secret=secret)
