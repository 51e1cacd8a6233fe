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
    adapter_ref,
    adapter_rollout_key,
    is_adapter_key,
    new_adapter_id,
    parse_adapter_key,
    parse_adapter_ref,
    validate_adapter_name,
)
from tenantserve.registry.model import ArtifactFile, manifest_digest
from tenantserve.registry.repository import current_of

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
    # Later versions with the same content never share the first one's files.
    assert adapter_key("ten_x", "bot", "sha256:" + "0123456789abcdef" * 4, 2) == key + "-v2"


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


def test_a_version_has_a_rollout_key_and_ref_scoped_to_its_tenant() -> None:
    a = _adapter(version=3)
    assert a.rollout_key == adapter_rollout_key(a.tenant_id, a.name)
    assert a.rollout_key == "adapter:ten_aaaaaaaaaaaaaaaa/support-bot"
    assert a.ref == adapter_ref(a.tenant_id, a.name, 3) == f"{a.rollout_key}@3"
    assert is_adapter_key(a.ref) and not is_adapter_key("llama")
    assert parse_adapter_key(a.rollout_key) == (a.tenant_id, a.name)
    assert parse_adapter_ref(a.ref) == (a.tenant_id, a.name, 3)
    for bad in ("llama@1.0.0", "adapter:ten_x", "adapter:/bot@1", "adapter:ten_x/bot@x"):
        with pytest.raises(InvalidRequestError):
            parse_adapter_ref(bad)
    with pytest.raises(InvalidRequestError, match="version must be"):
        _adapter(version=0)


def test_superseded_and_rolled_back_versions_are_not_routable() -> None:
    a = _adapter()
    a.mark_ready(NOW)
    assert a.is_routable
    a.supersede(NOW + timedelta(seconds=1))
    assert a.is_ready and not a.is_routable and a.superseded_at == NOW + timedelta(seconds=1)
    b = _adapter(id="adp_bbbbbbbbbbbbbbbb", version=2)
    b.mark_ready(NOW)
    b.roll_back("rolled back: too slow", NOW)
    assert b.status is AdapterStatus.FAILED and b.report == "rolled back: too slow"
    assert not b.is_routable and b.superseded_at == NOW


def test_the_current_version_is_the_oldest_routable_one_else_the_newest() -> None:
    def version(n: int, status: AdapterStatus, superseded: bool = False) -> Adapter:
        return _adapter(
            id=f"adp_{n:016d}".replace("0", "a"),
            version=n,
            status=status,
            superseded_at=NOW if superseded else None,
        )

    ready, failed = AdapterStatus.READY, AdapterStatus.FAILED
    assert current_of([]) is None
    # During a rollout of 3 over 2 (1 superseded), 2 stays current until it finishes.
    assert current_of([version(1, ready, True), version(2, ready), version(3, ready)]).version == 2  # type: ignore[union-attr]
    assert (
        current_of([version(1, ready, True), version(2, ready, True), version(3, ready)]).version
        == 3
    )  # type: ignore[union-attr]
    assert current_of([version(1, failed), version(2, failed)]).version == 2  # type: ignore[union-attr]
    assert current_of([version(1, ready), version(2, AdapterStatus.VALIDATING)]).version == 1  # type: ignore[union-attr]
