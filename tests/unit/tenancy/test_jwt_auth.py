"""JWT verification: HS256 and RS256 (PEM and JWKS), and a clear refusal for each bad token."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tenantserve.config import JwtConfig
from tenantserve.errors import AuthenticationError, ConfigError, CredentialsExpiredError
from tenantserve.tenancy.jwt_auth import JwtVerifier

AUDIENCE = "tenantserve-test"
SECRET = "s" * 40


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"tenant_id": "ten_a", "aud": AUDIENCE, "exp": int(time.time()) + 300}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256(**changes: Any) -> str:
    return jwt.encode(_claims(**changes), SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def pem_verifier(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> JwtVerifier:
    path = tmp_path / "public.pem"
    path.write_bytes(_public_pem(rsa_key))
    return JwtVerifier(JwtConfig(audience=AUDIENCE, rs256_public_key_file=path))


@pytest.fixture
def jwks_verifier(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> JwtVerifier:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return JwtVerifier(JwtConfig(audience=AUDIENCE, jwks_file=path))


def hs256_verifier() -> JwtVerifier:
    return JwtVerifier(JwtConfig(audience=AUDIENCE, hs256_secret=SECRET))


def test_hs256_token_yields_its_tenant_and_subject() -> None:
    identity = hs256_verifier().verify(_hs256(sub="user-1", allowed_models=["m2", "m1"]))
    assert identity.tenant_id == "ten_a"
    assert identity.subject == "user-1"
    assert identity.allowed_models == ("m1", "m2")


def test_sub_names_the_tenant_when_there_is_no_tenant_id_claim() -> None:
    identity = hs256_verifier().verify(_hs256(tenant_id=None, sub="ten_b"))
    assert identity.tenant_id == "ten_b"
    assert identity.allowed_models == ()


def test_rs256_token_verifies_with_the_configured_public_key(
    pem_verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    assert pem_verifier.verify(token).tenant_id == "ten_a"


def test_rs256_token_verifies_with_the_jwks_key_named_by_kid(
    jwks_verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    assert jwks_verifier.verify(token).tenant_id == "ten_a"


def test_rs256_token_with_an_unknown_kid_is_refused(
    jwks_verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k9"})
    with pytest.raises(AuthenticationError, match="kid"):
        jwks_verifier.verify(token)


def test_expired_token_is_refused_as_expired() -> None:
    with pytest.raises(CredentialsExpiredError, match="expired"):
        hs256_verifier().verify(_hs256(exp=int(time.time()) - 60))


def test_token_for_another_audience_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="audience"):
        hs256_verifier().verify(_hs256(aud="someone-else"))


def test_token_without_audience_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="aud"):
        hs256_verifier().verify(_hs256(aud=None))


def test_token_without_expiry_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="exp"):
        hs256_verifier().verify(_hs256(exp=None))


def test_hs256_token_signed_with_another_secret_is_refused() -> None:
    token = jwt.encode(_claims(), "x" * 40, algorithm="HS256")
    with pytest.raises(AuthenticationError, match="signature"):
        hs256_verifier().verify(token)


def test_rs256_token_signed_by_another_key_is_refused(
    pem_verifier: JwtVerifier, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(_claims(), other_rsa_key, algorithm="RS256")
    with pytest.raises(AuthenticationError, match="signature"):
        pem_verifier.verify(token)


def test_token_without_a_tenant_claim_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="tenant"):
        hs256_verifier().verify(_hs256(tenant_id=None))


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode(_claims(), None, algorithm="none")
    with pytest.raises(AuthenticationError, match="algorithm"):
        hs256_verifier().verify(token)


def test_hs256_token_keyed_with_the_rsa_public_key_is_refused(
    pem_verifier: JwtVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Algorithm confusion: the public key used as an HMAC secret.
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(_claims()).encode())
    signing_input = header + b"." + payload
    signature = hmac.new(_public_pem(rsa_key), signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()
    with pytest.raises(AuthenticationError, match="algorithm"):
        pem_verifier.verify(token)


def test_garbage_is_refused_as_malformed() -> None:
    with pytest.raises(AuthenticationError, match="malformed"):
        hs256_verifier().verify("not.a.jwt")


def test_short_hs256_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="at least"):
        JwtVerifier(JwtConfig(hs256_secret="short"))


def test_verifier_without_keys_is_disabled() -> None:
    assert not JwtVerifier(JwtConfig()).enabled
    assert hs256_verifier().enabled
