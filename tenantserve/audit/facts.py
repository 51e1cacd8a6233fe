"""The facts an audit entry keeps (pure): what changed between two JSON views, and the
redaction that keeps secrets (keys, tokens, passwords) out of every entry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
# Field names whose values are secrets wherever they appear.
SECRET_FIELDS = frozenset(
    {
        "key",
        "api_key",
        "plaintext",
        "token",
        "access_token",
        "admin_token",
        "authorization",
        "password",
        "secret",
        "secret_hash",
        "stripe_api_key",
        "hs256_secret",
    }
)
# Values that look like credentials whatever their field: tenant API keys
# (`ts-<id>-<secret>`), admin tokens, bearer headers, JWTs.
_SECRET_VALUE = re.compile(
    r"^(ts-[A-Za-z0-9]+-[A-Za-z0-9_\-]{8,}|tsadm-\S+|Bearer\s+\S+|eyJ[\w-]+\.[\w-]+\.[\w-]*)$"
)


def redact(value: Any) -> Any:
    """`value` with every secret field and credential-looking string replaced."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED if _secret_name(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return REDACTED
    return value


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_FIELDS or "secret" in lowered or "password" in lowered


def changes(
    before: Mapping[str, Any], after: Mapping[str, Any], fields: tuple[str, ...] | None = None
) -> dict[str, dict[str, Any]]:
    """`{field: {"from": old, "to": new}}` for each (of `fields`) that differs."""
    names = fields if fields is not None else tuple(dict.fromkeys([*before, *after]))
    return {
        name: {"from": before.get(name), "to": after.get(name)}
        for name in names
        if before.get(name) != after.get(name)
    }


def picked(view: Mapping[str, Any], *fields: str) -> dict[str, Any]:
    """The named fields of a JSON view (those present)."""
    return {name: view[name] for name in fields if name in view}
