"""Model registry names: the strings that identify a version and say who may reach it —
model names, versions (semver or date tag, and their sort order), scopes, runtime names —
and `ModelRef`, the `name` or `name@version` a request carries.

Pure parsing and validation; every refusal is an InvalidRequestError naming the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

from tenantserve.errors import InvalidRequestError
from tenantserve.tenancy.model import TENANT_ID_PREFIX

PUBLIC_SCOPE = "public"
MAX_NAME_CHARS = 128

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_SEMVER_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_DATE_TAG_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_RUNTIME_RE = re.compile(r"[a-z0-9][a-z0-9._+-]*")


def validate_name(name: str) -> str:
    """`name` when it is a valid model name (`[a-z0-9][a-z0-9._-]*`, ≤ 128 chars)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        raise InvalidRequestError(
            f"model name must match [a-z0-9][a-z0-9._-]* (at most {MAX_NAME_CHARS} "
            f"characters), not {name!r}"
        )
    return name


class VersionKey(NamedTuple):
    """Sort key of a version: semver (1, major, minor, patch) or date tag (0, y, m, d)."""

    scheme: int
    parts: tuple[int, int, int]


def version_key(version: str) -> VersionKey:
    """The sort key of a valid version; InvalidRequestError for anything else."""
    if m := _SEMVER_RE.fullmatch(version):
        return VersionKey(1, (int(m[1]), int(m[2]), int(m[3])))
    if _DATE_TAG_RE.fullmatch(version):
        try:
            d = date.fromisoformat(version)
        except ValueError:
            pass
        else:
            return VersionKey(0, (d.year, d.month, d.day))
    raise InvalidRequestError(
        f"version must be semver like 1.2.3 or a date tag like 2026-11-27, not {version!r}"
    )


def validate_version(version: str) -> str:
    """`version` when it is semver (`1.2.3`) or a date tag (`2026-11-27`)."""
    if not isinstance(version, str):
        raise InvalidRequestError(f"version must be a string, not {version!r}")
    version_key(version)
    return version


def validate_scope(scope: str) -> str:
    """`public`, or the id of the one tenant (`ten_...`) that may use the version."""
    if scope == PUBLIC_SCOPE:
        return scope
    if isinstance(scope, str) and scope.startswith(TENANT_ID_PREFIX) and _NAME_RE.fullmatch(scope):
        return scope
    raise InvalidRequestError(f"scope must be 'public' or a tenant id (ten_...), not {scope!r}")


def validate_runtimes(runtimes: Iterable[str]) -> tuple[str, ...]:
    """De-duplicated runtime names in the given order; at least one."""
    out: list[str] = []
    for r in runtimes:
        if not isinstance(r, str) or not _RUNTIME_RE.fullmatch(r):
            raise InvalidRequestError(f"runtime names must match [a-z0-9][a-z0-9._+-]*, not {r!r}")
        if r not in out:
            out.append(r)
    if not out:
        raise InvalidRequestError("a model version needs at least one runtime")
    return tuple(out)


@dataclass(frozen=True)
class ModelRef:
    """What a request names: `name` (the newest servable version) or `name@version`."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """`name` or `name@version`; InvalidRequestError naming what is wrong."""
        if not isinstance(text, str):
            raise InvalidRequestError(f"a model reference is a string, not {text!r}")
        name, sep, version = text.strip().partition("@")
        validate_name(name)
        if not sep:
            return cls(name)
        return cls(name, validate_version(version))

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"
