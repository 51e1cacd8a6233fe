"""Registry domain rules: names, versions, digests, lifecycle transitions, the 90-day rule,
and how a model reference resolves for a tenant."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.model import (
    ArtifactFile,
    Device,
    ModelArchivedError,
    ModelFormat,
    ModelStatus,
    ModelVersion,
    Quantization,
    earliest_end_date,
    manifest_digest,
    resolve,
)
from tenantserve.registry.naming import ModelRef, validate_name, validate_version, version_key

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
TENANT_A = "ten_aaaaaaaaaaaaaaaa"
TENANT_B = "ten_bbbbbbbbbbbbbbbb"


def _files(content: bytes = b"weights") -> tuple[ArtifactFile, ...]:
    return (
        ArtifactFile("config.json", 2, hashlib.sha256(b"{}").hexdigest()),
        ArtifactFile("model.safetensors", len(content), hashlib.sha256(content).hexdigest()),
    )


def make_version(
    version: str = "1.0.0",
    status: ModelStatus = ModelStatus.ACTIVE,
    scope: str = "public",
    name: str = "llama",
    **kw: Any,
) -> ModelVersion:
    files = _files(version.encode())
    return ModelVersion(
        name=name,
        version=version,
        digest=manifest_digest(files),
        format=ModelFormat.SAFETENSORS,
        quantization=Quantization.FP32,
        runtimes=("tenantserve",),
        min_memory_bytes=100,
        device=Device.ANY,
        status=status,
        scope=scope,
        created_at=NOW,
        artifact_uri=f"file:///a/{name}/{version}",
        files=files,
        **kw,
    )


@pytest.mark.parametrize("name", ["llama", "smollm2-135m-instruct", "a", "q.w_e-r", "0x"])
def test_valid_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Llama", "-x", ".x", "_x", "a b", "a/b", "a@b", "x" * 129])
def test_invalid_names_are_refused_naming_the_pattern(name: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"\[a-z0-9\]"):
        validate_name(name)


@pytest.mark.parametrize("version", ["1.2.3", "0.0.1", "10.20.30", "2026-11-27", "2024-02-29"])
def test_semver_and_date_tags_are_valid_versions(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize(
    "version", ["1.2", "v1.2.3", "01.2.3", "1.2.3.4", "2026-13-01", "2025-02-29", "latest", ""]
)
def test_other_versions_are_refused(version: str) -> None:
    with pytest.raises(InvalidRequestError, match="semver"):
        validate_version(version)


def test_versions_sort_numerically_not_as_text() -> None:
    assert version_key("1.10.0") > version_key("1.9.9")
    assert version_key("2026-01-02") > version_key("2025-12-31")


def test_a_model_ref_is_a_name_or_name_at_version() -> None:
    assert ModelRef.parse("llama") == ModelRef("llama")
    assert ModelRef.parse("llama@1.2.3") == ModelRef("llama", "1.2.3")
    assert str(ModelRef.parse("llama@2026-11-27")) == "llama@2026-11-27"
    with pytest.raises(InvalidRequestError):
        ModelRef.parse("llama@latest")


def test_the_digest_covers_paths_sizes_and_content_in_path_order() -> None:
    files = _files()
    assert manifest_digest(files) == manifest_digest(reversed(files))
    assert manifest_digest(files).startswith("sha256:")
    renamed = (replace(files[0], path="other.json"), files[1])
    changed = (files[0], _files(b"weightz")[1])
    assert len({manifest_digest(files), manifest_digest(renamed), manifest_digest(changed)}) == 3


def test_a_version_whose_digest_does_not_match_its_files_is_refused() -> None:
    v = make_version()
    with pytest.raises(InvalidRequestError, match="digest"):
        replace(v, digest="sha256:" + "0" * 64)


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../b", "a//b", "./a", ""])
def test_artifact_paths_never_leave_their_root(path: str) -> None:
    with pytest.raises(InvalidRequestError):
        ArtifactFile(path, 1, "0" * 64)


def test_deprecation_needs_an_end_date_at_least_90_days_out_and_names_the_earliest() -> None:
    v = make_version()
    earliest = earliest_end_date(NOW)
    assert earliest == date(2026, 4, 10)
    with pytest.raises(InvalidRequestError, match="2026-04-10 or later"):
        v.deprecate(earliest - timedelta(days=1), NOW)
    assert v.status is ModelStatus.ACTIVE
    v.deprecate(earliest, NOW, replacement=make_version("2.0.0"))
    assert (v.status, v.deprecation_end_date, v.replacement) == (
        ModelStatus.DEPRECATED,
        earliest,
        "llama@2.0.0",
    )
    assert v.deprecated_at == NOW


def test_repeating_a_deprecation_is_a_no_op_and_changing_it_is_refused() -> None:
    v = make_version()
    end = earliest_end_date(NOW) + timedelta(days=5)
    v.deprecate(end, NOW)
    v.deprecate(end, NOW + timedelta(days=1))
    assert v.deprecated_at == NOW
    with pytest.raises(InvalidRequestError, match="already deprecated"):
        v.deprecate(end + timedelta(days=1), NOW)


def test_an_active_version_is_deprecated_before_it_is_archived() -> None:
    v = make_version()
    with pytest.raises(InvalidRequestError, match="deprecate it first"):
        v.archive(NOW)
    v.deprecate(earliest_end_date(NOW), NOW, make_version("2.0.0"))
    v.archive(NOW)
    assert v.status is ModelStatus.ARCHIVED and v.replacement == "llama@2.0.0"


def test_a_canary_can_be_archived_directly_and_archived_is_final() -> None:
    v = make_version(status=ModelStatus.CANARY)
    v.archive(NOW, replacement=make_version("0.9.0"))
    v.archive(NOW)  # again: a no-op
    with pytest.raises(InvalidRequestError, match="final"):
        v.deprecate(earliest_end_date(NOW), NOW)
    with pytest.raises(InvalidRequestError, match="final"):
        v.archive(NOW, replacement=make_version("3.0.0"))
    assert v.replacement == "llama@0.9.0"


def test_a_replacement_must_be_servable_another_version_and_visible() -> None:
    v = make_version()
    end = earliest_end_date(NOW)
    with pytest.raises(InvalidRequestError, match="itself"):
        v.deprecate(end, NOW, make_version())
    with pytest.raises(InvalidRequestError, match="archived"):
        v.deprecate(end, NOW, make_version("2.0.0", ModelStatus.ARCHIVED))
    with pytest.raises(InvalidRequestError, match="not visible"):
        v.deprecate(end, NOW, make_version("2.0.0", scope=TENANT_A))


def test_a_public_version_never_becomes_private_but_a_private_one_can_be_published() -> None:
    public = make_version()
    with pytest.raises(InvalidRequestError, match="cannot be private"):
        public.change_scope(TENANT_A)
    private = make_version(scope=TENANT_A)
    with pytest.raises(InvalidRequestError, match="another tenant"):
        private.change_scope(TENANT_B)
    private.change_scope("public")
    assert private.is_public


def test_a_name_resolves_to_the_newest_active_version_visible_to_the_tenant() -> None:
    versions = [
        make_version("1.0.0"),
        make_version("1.10.0"),
        make_version("1.9.0"),
        make_version("2.0.0", ModelStatus.CANARY),
        make_version("3.0.0", scope=TENANT_B),
    ]
    got = resolve(ModelRef("llama"), versions, TENANT_A)
    assert got.version.version == "1.10.0" and got.warning is None and got.headers() == {}
    assert resolve(ModelRef("llama"), versions, TENANT_B).version.version == "3.0.0"
    assert resolve(ModelRef("llama"), versions, None).version.version == "1.10.0"


def test_a_pinned_version_is_served_until_archived_then_the_error_names_the_replacement() -> None:
    old = make_version("1.0.0")
    new = make_version("2.0.0")
    pinned = ModelRef("llama", "1.0.0")
    assert resolve(pinned, [old, new], TENANT_A).version is old
    old.deprecate(earliest_end_date(NOW), NOW, new)
    got = resolve(pinned, [old, new], TENANT_A)
    assert got.version is old
    assert got.warning is not None and "llama@2.0.0" in got.warning and "2026-04-10" in got.warning
    headers = got.headers()
    assert headers["Deprecation"] == f"@{int(NOW.timestamp())}"
    assert headers["Sunset"] == "Fri, 10 Apr 2026 00:00:00 GMT"
    assert headers["Warning"].startswith('299 tenantserve "model llama@1.0.0 is deprecated')
    old.archive(NOW)
    with pytest.raises(ModelArchivedError, match=r"llama@1\.0\.0 is archived; use llama@2\.0\.0"):
        resolve(pinned, [old, new], TENANT_A)
    assert resolve(ModelRef("llama"), [old, new], TENANT_A).version is new


def test_a_name_falls_back_to_a_deprecated_version_with_its_warning() -> None:
    old = make_version("1.0.0")
    old.deprecate(earliest_end_date(NOW), NOW)
    got = resolve(ModelRef("llama"), [old, make_version("2.0.0", ModelStatus.CANARY)], None)
    assert got.version is old and got.warning is not None


def test_a_pinned_canary_is_served_but_a_bare_name_never_picks_it() -> None:
    canary = make_version("2.0.0", ModelStatus.CANARY)
    assert resolve(ModelRef("llama", "2.0.0"), [canary], None).version is canary
    with pytest.raises(NotFoundError, match="no servable version"):
        resolve(ModelRef("llama"), [canary], None)


def test_another_tenants_private_version_does_not_exist_for_this_tenant() -> None:
    private = make_version("1.0.0", scope=TENANT_B)
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve(ModelRef("llama", "1.0.0"), [private], TENANT_A)
    with pytest.raises(NotFoundError):
        resolve(ModelRef("llama"), [private], TENANT_A)
    with pytest.raises(NotFoundError):
        resolve(ModelRef("llama"), [private], None)
    assert resolve(ModelRef("llama", "1.0.0"), [private], TENANT_B).version is private


def test_a_name_whose_versions_are_all_archived_names_the_replacement() -> None:
    old = make_version("1.0.0", ModelStatus.CANARY)
    old.archive(NOW, make_version("9.0.0", name="other-model"))
    with pytest.raises(ModelArchivedError, match=r"other-model@9\.0\.0"):
        resolve(ModelRef("llama"), [old], None)
