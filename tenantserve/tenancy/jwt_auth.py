"""JWT bearer tokens as an alternative to API keys.

HS256 with a shared secret, RS256 with a public key (PEM file) or a JWKS file
(keys chosen by `kid`). Required claims: `exp`, `aud` (the configured audience)
and a tenant: `tenant_id`, else `sub`. Optional: `allowed_models` (list of model
names) narrows the token's scope. Only algorithms with a configured key are
accepted, and each only with its own kind of key (no `none`, no alg confusion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tenantserve.config import JwtConfig
from tenantserve.errors import AuthenticationError, ConfigError, CredentialsExpiredError

MIN_HS256_SECRET_BYTES = 32


class JwtIdentity(NamedTuple):
    """What a verified token says: the tenant, the subject, and its model scope."""

    tenant_id: str
    subject: str
    # Empty: every model the tenant may use.
    allowed_models: tuple[str, ...]


class JwtVerifier:
    """Verifies bearer JWTs against the configured keys; `enabled` is False without any."""

    def __init__(self, cfg: JwtConfig) -> None:
        self._cfg = cfg
        self._hs256_secret: bytes | None = None
        self._rsa_key: RSAPublicKey | None = None
        self._jwks: dict[str | None, Any] = {}
        if cfg.hs256_secret is not None:
            secret = cfg.hs256_secret.encode()
            if len(secret) < MIN_HS256_SECRET_BYTES:
                raise ConfigError(
                    f"JWT HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes"
                )
            self._hs256_secret = secret
        if cfg.rs256_public_key_file is not None:
            self._rsa_key = _load_rsa_public_key(cfg.rs256_public_key_file)
        if cfg.jwks_file is not None:
            self._jwks = _load_jwks(cfg.jwks_file)

    @property
    def enabled(self) -> bool:
        return self._hs256_secret is not None or self._rsa_key is not None or bool(self._jwks)

    def verify(self, token: str) -> JwtIdentity:
        """The token's identity, or AuthenticationError (CredentialsExpiredError past `exp`)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("malformed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthenticationError("malformed JWT: no algorithm in its header")
        key = self._key_for(alg, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._cfg.audience,
                issuer=self._cfg.issuer,
                options={"require": ["exp", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise CredentialsExpiredError("JWT has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(
                f"JWT audience is not accepted (expected {self._cfg.audience!r})"
            ) from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("JWT signature is invalid") from None
        except jwt.MissingRequiredClaimError as e:
            raise AuthenticationError(f"JWT lacks the required claim {e.claim!r}") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("JWT issuer is not accepted") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("JWT is not valid yet") from None
        except jwt.PyJWTError as e:
            raise AuthenticationError(f"invalid JWT: {e}") from None
        return _identity(claims)

    def _key_for(self, alg: str, kid: object) -> Any:
        if alg == "HS256" and self._hs256_secret is not None:
            return self._hs256_secret
        if alg == "RS256":
            if self._jwks:
                jwk = self._jwks.get(kid) if isinstance(kid, str) else None
                if jwk is None and kid is None and len(self._jwks) == 1:
                    jwk = next(iter(self._jwks.values()))
                if jwk is not None:
                    return jwk
                if self._rsa_key is None:
                    raise AuthenticationError("JWT key id (kid) is unknown")
            if self._rsa_key is not None:
                return self._rsa_key
        raise AuthenticationError(f"JWT algorithm {alg!r} is not accepted")


def _identity(claims: dict[str, Any]) -> JwtIdentity:
    tenant_id = claims.get("tenant_id") or claims.get("sub")
    if not isinstance(tenant_id, str) or not tenant_id:
        raise AuthenticationError("JWT lacks a tenant claim (tenant_id or sub)")
    subject = claims.get("sub")
    models = claims.get("allowed_models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise AuthenticationError("JWT claim allowed_models must be a list of model names")
    return JwtIdentity(
        tenant_id=tenant_id,
        subject=subject if isinstance(subject, str) and subject else tenant_id,
        allowed_models=tuple(sorted(set(models))),
    )


def _load_rsa_public_key(path: Path) -> RSAPublicKey:
    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the JWT public key from {path}: {e}") from e
    if not isinstance(key, RSAPublicKey):
        raise ConfigError(f"the JWT public key in {path} is not an RSA key")
    return key


def _load_jwks(path: Path) -> dict[str | None, Any]:
    try:
        key_set = jwt.PyJWKSet.from_json(path.read_text())
    except (OSError, jwt.PyJWTError, ValueError) as e:
        raise ConfigError(f"cannot load the JWKS file {path}: {e}") from e
    keys: dict[str | None, Any] = {}
    for jwk in key_set.keys:
        if jwk.key_type == "RSA":
            keys[jwk.key_id] = jwk
    if not keys:
        raise ConfigError(f"the JWKS file {path} holds no RSA key")
    return keys
