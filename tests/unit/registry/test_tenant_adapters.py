"""The adapter domain: name rules, artifact keys, and the validating → ready / failed life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tenantserve.errors import InvalidRequestError
from tenantserve.registry.adapters import (
    ADAPTER_ID_PREFIX,
    Adapter,
    AdapterStatus,
    adapter_key,
    new_adapter_id,
    validate_adapter_name,
)
from tenantserve.registry.model import ArtifactFile, manifest_digest

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
FILES = (
    ArtifactFile("adapter_model.safetensors", 100, "b" * 64),
    ArtifactFile("adapter_config.json", 10, "a" * 64),
)


def _adapter(**changes: object) -> Adapter:
    fields: dict[str, object] = {
        "id": "adp_aaaaaaaaaaaaaaaa",
        "tenant_id": "ten_aaaaaaaaaaaaaaaa",
        "name": "support-bot",
        "base_model": "llama@1.0.0",
        "rank": 8,
        "target_modules": ("v_proj", "q_proj", "q_proj"),
        "digest": manifest_digest(FILES),
        "artifact_uri": "file:///a",
        "files": FILES,
        "status": AdapterStatus.VALIDATING,
        "created_at": NOW,
    }
    fields.update(changes)
    return Adapter(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a", "Support-Bot_v2.1", "0", "x" * 64])
def test_valid_adapter_names_are_accepted(name: str) -> None:
    assert validate_adapter_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".hidden", "-x", "_x", "a/b", "../x", "a b", "x" * 65, "é", None, 3]
)
def test_invalid_adapter_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidRequestError, match="adapter name must match"):
        validate_adapter_name(name)


def test_adapter_ids_are_prefixed_and_unique() -> None:
    ids = {new_adapter_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith(ADAPTER_ID_PREFIX) and len(i) == 20 for i in ids)


def test_the_artifact_key_holds_tenant_name_and_a_digest_prefix() -> None:
    key = adapter_key("ten_x", "bot", "sha256:" + "0123456789abcdef" * 4)
    assert key == "adapters/ten_x/bot/0123456789abcdef"


def test_an_adapter_sorts_its_files_and_modules_and_sums_its_size() -> None:
    a = _adapter()
    assert [f.path for f in a.files] == ["adapter_config.json", "adapter_model.safetensors"]
    assert a.target_modules == ("q_proj", "v_proj")
    assert a.size_bytes == 110
    assert not a.is_ready


def test_a_digest_that_does_not_match_the_files_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="digest does not match"):
        _adapter(digest="sha256:" + "0" * 64)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"rank": 0}, "rank"),
        ({"target_modules": ()}, "at least one module"),
        ({"id": "ten_x"}, "adapter id"),
        ({"name": "a/b"}, "adapter name"),
    ],
)
def test_malformed_adapters_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        _adapter(**changes)


def test_a_validating_adapter_becomes_ready_and_routable() -> None:
    a = _adapter()
    a.mark_ready(NOW + timedelta(seconds=5))
    assert a.is_ready and a.report is None and a.updated_at == NOW + timedelta(seconds=5)


def test_a_failed_adapter_carries_its_report_and_is_not_routable() -> None:
    a = _adapter()
    a.mark_failed("lora_B is all zeros", NOW)
    assert a.status is AdapterStatus.FAILED and a.report == "lora_B is all zeros"
    assert not a.is_ready


def test_only_a_validating_adapter_changes_status() -> None:
    a = _adapter()
    a.mark_ready(NOW)
    with pytest.raises(InvalidRequestError, match="is ready, not validating"):
        a.mark_failed("late", NOW)
    with pytest.raises(ValueError, match="needs a report"):
        _adapter().mark_failed("", NOW)
