"""API keys: shape, hashing, constant-time verification, expiry and revocation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from tenantserve.errors import (
    AuthenticationError,
    CredentialsExpiredError,
    CredentialsRevokedError,
)
from tenantserve.tenancy.keys import ApiKeyHasher, looks_like_api_key, parse_key
from tenantserve.tenancy.model import ApiKey

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _stored(hasher: ApiKeyHasher, **changes: object) -> tuple[ApiKey, str]:
    generated = hasher.generate()
    key = ApiKey(
        id=generated.key_id,
        tenant_id="ten_a",
        prefix=generated.prefix,
        secret_hash=generated.secret_hash,
        created_at=NOW,
    )
    for name, value in changes.items():
        setattr(key, name, value)
    return key, generated.plaintext


def test_generated_key_has_the_documented_shape_and_parses_back_to_its_id() -> None:
    generated = ApiKeyHasher().generate()
    prefix, id_part, secret = generated.plaintext.split("-", 2)
    assert prefix == "ts"
    assert generated.key_id == f"key_{id_part}"
    assert generated.prefix == f"ts-{id_part}"
    assert len(secret) == 43  # 32 random bytes, base64url without padding
    presented = parse_key(generated.plaintext)
    assert presented.key_id == generated.key_id
    assert presented.secret == secret


def test_every_generated_key_is_different() -> None:
    hasher = ApiKeyHasher()
    keys = [hasher.generate() for _ in range(100)]
    assert len({k.plaintext for k in keys}) == 100
    assert len({k.key_id for k in keys}) == 100


def test_only_a_hash_of_the_secret_is_kept() -> None:
    generated = ApiKeyHasher().generate()
    secret = parse_key(generated.plaintext).secret
    assert secret not in generated.secret_hash
    assert generated.secret_hash == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def test_peppered_hash_is_hmac_and_differs_from_plain_sha256() -> None:
    plain, peppered = ApiKeyHasher(), ApiKeyHasher("server-pepper")
    assert peppered.hash_secret("s").startswith("hmac-sha256:")
    assert peppered.hash_secret("s") != plain.hash_secret("s")
    assert peppered.hash_secret("s") != ApiKeyHasher("other-pepper").hash_secret("s")


def test_the_right_secret_verifies() -> None:
    hasher = ApiKeyHasher("pepper")
    key, plaintext = _stored(hasher)
    assert hasher.verify(key, parse_key(plaintext), NOW) is key


def test_a_wrong_secret_is_refused() -> None:
    hasher = ApiKeyHasher()
    key, plaintext = _stored(hasher)
    wrong = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    with pytest.raises(AuthenticationError, match="invalid API key"):
        hasher.verify(key, parse_key(wrong), NOW)


def test_an_unknown_key_is_refused_like_a_wrong_secret() -> None:
    hasher = ApiKeyHasher()
    _, plaintext = _stored(hasher)
    with pytest.raises(AuthenticationError, match="invalid API key") as info:
        hasher.verify(None, parse_key(plaintext), NOW)
    assert type(info.value) is AuthenticationError


def test_a_secret_presented_under_another_key_id_is_refused() -> None:
    hasher = ApiKeyHasher()
    key_a, _ = _stored(hasher)
    _, plaintext_b = _stored(hasher)
    presented_b = parse_key(plaintext_b)
    forged = presented_b._replace(key_id=key_a.id)
    with pytest.raises(AuthenticationError):
        hasher.verify(key_a, forged, NOW)


def test_a_key_hashed_under_another_pepper_is_refused() -> None:
    key, plaintext = _stored(ApiKeyHasher("old-pepper"))
    with pytest.raises(AuthenticationError):
        ApiKeyHasher("new-pepper").verify(key, parse_key(plaintext), NOW)


def test_a_revoked_key_is_refused_as_revoked() -> None:
    hasher = ApiKeyHasher()
    key, plaintext = _stored(hasher)
    key.revoke(NOW)
    with pytest.raises(CredentialsRevokedError):
        hasher.verify(key, parse_key(plaintext), NOW)


def test_revoking_twice_keeps_the_first_time() -> None:
    key, _ = _stored(ApiKeyHasher())
    key.revoke(NOW)
    key.revoke(NOW + timedelta(days=1))
    assert key.revoked_at == NOW


def test_a_key_works_until_its_expiry_and_not_from_then_on() -> None:
    hasher = ApiKeyHasher()
    expires_at = NOW + timedelta(days=1)
    key, plaintext = _stored(hasher, expires_at=expires_at)
    hasher.verify(key, parse_key(plaintext), expires_at - timedelta(seconds=1))
    with pytest.raises(CredentialsExpiredError):
        hasher.verify(key, parse_key(plaintext), expires_at)


def test_a_wrong_secret_on_a_revoked_key_does_not_reveal_the_revocation() -> None:
    hasher = ApiKeyHasher()
    key, plaintext = _stored(hasher)
    key.revoke(NOW)
    with pytest.raises(AuthenticationError) as info:
        hasher.verify(key, parse_key(plaintext[:-2] + "zz"), NOW)
    assert type(info.value) is AuthenticationError


@pytest.mark.parametrize(
    "credential",
    ["", "ts", "ts-", "ts-abc", "ts-abc-", "ts--secret", "sk-abc-secret", "ts-ab.c-secret"],
)
def test_malformed_keys_are_refused(credential: str) -> None:
    with pytest.raises(AuthenticationError, match="malformed"):
        parse_key(credential)


def test_a_jwt_does_not_look_like_an_api_key() -> None:
    assert looks_like_api_key(ApiKeyHasher().generate().plaintext)
    assert not looks_like_api_key("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
