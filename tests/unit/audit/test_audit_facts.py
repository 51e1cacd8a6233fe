"""What an audit entry keeps: changes as from → to, and never a secret."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tenantserve.audit import actions
from tenantserve.audit.entry import AuditEntry, json_ready
from tenantserve.audit.facts import REDACTED, changes, redact


def test_changes_list_only_what_differs_from_and_to() -> None:
    before = {"id": "ten_1", "tier": "free", "status": "active", "limits": {"rpm": 10}}
    after = {"id": "ten_1", "tier": "premium", "status": "active", "limits": {"rpm": 20}}
    assert changes(before, after) == {
        "tier": {"from": "free", "to": "premium"},
        "limits": {"from": {"rpm": 10}, "to": {"rpm": 20}},
    }
    assert changes(before, after, ("status",)) == {}


def test_secrets_are_redacted_by_name_and_by_shape() -> None:
    details = {
        "key": "anything",
        "api_key": "x",
        "client_secret": "x",
        "Password": "x",
        "nested": [{"token": "x"}, "ts-abc123-" + "s" * 20, "Bearer abc", "tsadm-zzz"],
        "jwt": "eyJhbGciOi.eyJzdWIiOi.sig",
        "prefix": "ts-abc123",
        "max_tokens": 100,
        "key_id": "key_1",
    }
    assert redact(details) == {
        "key": REDACTED,
        "api_key": REDACTED,
        "client_secret": REDACTED,
        "Password": REDACTED,
        "nested": [{"token": REDACTED}, REDACTED, REDACTED, REDACTED],
        "jwt": REDACTED,
        "prefix": "ts-abc123",
        "max_tokens": 100,
        "key_id": "key_1",
    }


def test_a_created_key_entry_never_holds_the_key() -> None:
    key_json = {
        "id": "key_1",
        "tenant_id": "ten_1",
        "prefix": "ts-abc",
        "allowed_models": [],
        "created_at": "2026-01-01T00:00:00+00:00",
        "expires_at": None,
        "revoked_at": None,
        "key": "ts-abc-secretsecretsecret",
    }
    action, target, details = actions.key_created(key_json)
    assert (action, target) == ("key.create", "key_1")
    assert "key" not in details and "ts-abc-secretsecretsecret" not in str(details)


def test_details_are_hashed_as_they_read_back_from_json() -> None:
    details = {"amount": Decimal("1.50"), "steps": (1, 10), "at": datetime(2026, 1, 1, tzinfo=UTC)}
    assert json_ready(details) == {
        "amount": "1.50",
        "steps": [1, 10],
        "at": "2026-01-01 00:00:00+00:00",
    }
    entry = AuditEntry.create(None, datetime.now(UTC), "admin", "price.set", "tokens", details)
    assert entry.details == json_ready(details)
    assert entry.computed_hash() == entry.hash
